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

func poolLimit(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limit
}

// ReportLoad is AIMD: an overload halves the limit once per congestion
// event (overloads of fetches granted before the decrease do not count
// again), and a run of successes as long as the limit raises it by one, up
// to the Pool's connections.
func TestPoolReportLoadAIMD(t *testing.T) {
	p := NewPool(8)
	oldCtx, oldRelease, err := p.admit(bg, prioBulk)
	if err != nil {
		t.Fatal(err)
	}
	defer oldRelease()
	p.ReportLoad(oldCtx, true)
	if got := poolLimit(p); got != 4 {
		t.Fatalf("after an overload the limit is %d, want 4", got)
	}
	p.ReportLoad(oldCtx, true) // the same event, reported by another old fetch
	if got := poolLimit(p); got != 4 {
		t.Fatalf("an overload of a fetch granted before the decrease lowered the limit to %d, want 4", got)
	}
	newCtx, newRelease, err := p.admit(bg, prioBulk)
	if err != nil {
		t.Fatal(err)
	}
	p.ReportLoad(newCtx, true)
	newRelease()
	if got := poolLimit(p); got != 2 {
		t.Fatalf("an overload after the decrease left the limit at %d, want 2", got)
	}
	p.ReportLoad(bg, true) // not granted by the Pool: the current epoch
	p.ReportLoad(bg, true)
	if got := poolLimit(p); got != 1 {
		t.Fatalf("the limit is %d, want 1 at the floor", got)
	}
	for want := 2; want <= 8; want++ {
		for range want - 1 {
			p.ReportLoad(bg, false)
		}
		if got := poolLimit(p); got != want {
			t.Fatalf("after %d successes the limit is %d, want %d", want-1, got, want)
		}
	}
	for range 20 {
		p.ReportLoad(bg, false)
	}
	if got := poolLimit(p); got != 8 {
		t.Fatalf("the limit grew to %d, past the Pool's 8 connections", got)
	}
}

// While the server sheds load the Pool still decides by priority: with the
// limit lowered, a freed slot goes to a queued demand read, not to the
// prefetch queued before it (fetch no longer queues requests FIFO).
func TestPoolLoweredLimitKeepsPriorities(t *testing.T) {
	p := NewPool(4)
	var held []func()
	for range 4 {
		r, err := p.acquire(bg, prioBulk)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	p.ReportLoad(bg, true) // limit 2, of which prefetch may use 1
	grants := make(chan priority, 2)
	for _, prio := range []priority{prioPrefetch, prioDemand} {
		go func() {
			r, err := p.acquire(bg, prio)
			if err != nil {
				t.Error(err)
				return
			}
			grants <- prio
			t.Cleanup(r)
		}()
		waitFor(t, "waiter queued", func() bool { return queued(p, prio) == 1 })
	}
	held[0]()
	held[1]()
	if active, _ := p.stats(); active != 2 {
		t.Fatalf("%d slots in use at limit 2 with two still held, want 2", active)
	}
	select {
	case g := <-grants:
		t.Fatalf("priority %d granted a slot above the lowered limit", g)
	default:
	}
	held[2]()
	if got := recv(t, grants, "grant at the lowered limit"); got != prioDemand {
		t.Fatalf("the freed slot went to priority %d, want demand", got)
	}
	if queued(p, prioPrefetch) != 1 {
		t.Fatal("prefetch should still wait")
	}
	held[3]()
}

// A File's fetches carry their Pool slot in their ctx, so that overloads
// met by fetches granted together lower the limit once.
func TestFileFetchesReportLoadByTheirSlot(t *testing.T) {
	size := int64(8 * testChunk)
	src := newFake(size)
	pool := NewPool(8)
	// Every fetch meets an overload.
	src.Answered = func(ctx context.Context) { pool.ReportLoad(ctx, true) }
	release := make(chan struct{})
	var startedN atomic.Int32
	src.Gate = func(off, n int64) <-chan struct{} {
		startedN.Add(1)
		return release
	}
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: pool, MaxRequest: testChunk})
	done := make(chan error, 1)
	go func() { done <- f.Fill(bg) }()
	waitFor(t, "eight fetches", func() bool { return startedN.Load() == 8 })
	close(release)
	if err := recv(t, done, "Fill"); err != nil {
		t.Fatal(err)
	}
	if got := poolLimit(pool); got != 4 {
		t.Fatalf("eight overloads of fetches granted together left the limit at %d, want 4 (halved once)", got)
	}
}
