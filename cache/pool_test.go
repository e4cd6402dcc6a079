package cache

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func queued(p *Pool, prio priority) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue[prio])
}

func TestPoolPriorityOrder(t *testing.T) {
	p := NewPool(4) // prefetch may use 3
	var rel []func()
	for range 3 {
		r, err := p.acquire(bg, prioPrefetch)
		if err != nil {
			t.Fatal(err)
		}
		rel = append(rel, r)
	}
	cancelled, cancel := context.WithCancel(bg)
	cancel()
	if _, err := p.acquire(cancelled, prioPrefetch); err == nil {
		t.Fatal("prefetch took the slot reserved for demand")
	}
	r, err := p.acquire(bg, prioDemand)
	if err != nil {
		t.Fatal(err)
	}
	rel = append(rel, r)

	// Pool full. Queue prefetch, then bulk, then demand; grants must come
	// in priority order, not arrival order.
	order := make(chan priority, 3)
	var got sync.WaitGroup
	for _, prio := range []priority{prioPrefetch, prioBulk, prioDemand} {
		got.Add(1)
		go func() {
			defer got.Done()
			r, err := p.acquire(bg, prio)
			if err != nil {
				t.Error(err)
				return
			}
			order <- prio
			rel2 := r
			t.Cleanup(rel2)
		}()
		waitFor(t, "waiter queued", func() bool { return queued(p, prio) == 1 })
	}
	rel[0]()
	if got := recv(t, order, "first grant"); got != prioDemand {
		t.Fatalf("first grant went to %d, want demand", got)
	}
	rel[1]()
	if got := recv(t, order, "second grant"); got != prioBulk {
		t.Fatalf("second grant went to %d, want bulk", got)
	}
	// 4 active; prefetch needs active < 3.
	rel[2]()
	select {
	case <-order:
		t.Fatal("prefetch granted while only the reserved slot was free")
	default:
	}
	rel[3]()
	if got := recv(t, order, "third grant"); got != prioPrefetch {
		t.Fatalf("third grant went to %d, want prefetch", got)
	}
	got.Wait()
	rel[0]() // release functions are idempotent
}

func TestPoolNeverExceedsLimit(t *testing.T) {
	const limit = 5
	p := NewPool(limit)
	var active, peak atomic.Int64
	var wg sync.WaitGroup
	for g := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				ctx, cancel := context.WithCancel(bg)
				if rng.IntN(10) == 0 {
					cancel() // some waiters give up
				}
				r, err := p.acquire(ctx, priority(rng.IntN(int(numPrio))))
				cancel()
				if err != nil {
					continue
				}
				n := active.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				active.Add(-1)
				r()
			}
		}()
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Fatalf("%d slots in use at once, limit %d", peak.Load(), limit)
	}
	if a, seen := p.stats(); a != 0 || seen > limit {
		t.Fatalf("after all releases: active %d, max %d", a, seen)
	}
}

// One queued request makes one background fetch yield, not every fetch
// that reaches a chunk boundary before the slot is handed over; a fetch
// about to end anyway yields only to demand.
func TestPoolYieldPromises(t *testing.T) {
	p := NewPool(3)
	var rel []func()
	for range 3 {
		r, err := p.acquire(bg, prioBulk)
		if err != nil {
			t.Fatal(err)
		}
		rel = append(rel, r)
	}
	if p.shouldYield(prioBulk, 5) {
		t.Fatal("yield with nobody waiting")
	}

	// queue starts a waiter at prio and returns a channel that receives
	// its release function once it is granted.
	queue := func(prio priority) <-chan func() {
		ch := make(chan func(), 1)
		go func() {
			r, err := p.acquire(bg, prio)
			if err != nil {
				t.Error(err)
				close(ch)
				return
			}
			ch <- r
		}()
		waitFor(t, "waiter queued", func() bool { return queued(p, prio) == 1 })
		return ch
	}

	demand := queue(prioDemand)
	if !p.shouldYield(prioBulk, 5) {
		t.Fatal("no yield to a queued demand read")
	}
	if p.shouldYield(prioBulk, 5) || p.shouldYield(prioPrefetch, 5) {
		t.Fatal("a second fetch yields for the same queued request")
	}
	if p.shouldYield(prioDemand, 5) {
		t.Fatal("demand yields")
	}
	rel[0]() // the yielding fetch ends
	rel[0] = recv(t, demand, "demand grant")
	if p.shouldYield(prioBulk, 5) {
		t.Fatal("yield with nobody waiting")
	}
	p.mu.Lock()
	promised := p.yielding
	p.mu.Unlock()
	if promised != 0 {
		t.Fatalf("%d promises left after the grant, want 0", promised)
	}

	ahead := queue(prioReadAhead)
	if p.shouldYield(prioBulk, 1) {
		t.Fatal("a fetch with one chunk left yields to read-ahead")
	}
	if !p.shouldYield(prioBulk, 2) {
		t.Fatal("no yield to queued read-ahead")
	}
	if p.shouldYield(prioBulk, 2) {
		t.Fatal("a second fetch yields for the same queued read-ahead")
	}
	rel[1]()
	rel[1] = recv(t, ahead, "read-ahead grant")

	// A waiter that gives up takes its promise with it.
	ctx, cancel := context.WithCancel(bg)
	gaveUp := make(chan error, 1)
	go func() { _, err := p.acquire(ctx, prioDemand); gaveUp <- err }()
	waitFor(t, "waiter queued", func() bool { return queued(p, prioDemand) == 1 })
	if !p.shouldYield(prioBulk, 5) {
		t.Fatal("no yield to a queued demand read")
	}
	cancel()
	if err := recv(t, gaveUp, "cancelled waiter"); err == nil {
		t.Fatal("cancelled waiter got a slot")
	}
	demand = queue(prioDemand)
	if !p.shouldYield(prioBulk, 5) {
		t.Fatal("a promise made for a waiter that gave up still counts")
	}
	rel[2]()
	rel[2] = recv(t, demand, "demand grant")
	for _, r := range rel {
		r()
	}
	if a, seen := p.stats(); a != 0 || seen > 3 {
		t.Fatalf("after all releases: active %d, max %d", a, seen)
	}
}
