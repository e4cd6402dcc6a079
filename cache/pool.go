package cache

import (
	"context"
	"strconv"
	"sync"
)

// priority orders requests for a Pool slot; lower values go first.
type priority int

const (
	prioDemand    priority = iota // a reader is waiting for these bytes now
	prioReadAhead                 // a sequential reader will want these next
	prioBulk                      // Fill: the caller wants the whole file
	prioPrefetch                  // background fill of a mounted file
	numPrio
)

// Pool is the budget of concurrent Source.Fetch calls, shared by all Files of
// one process so demand reads on one file and prefetch on another compete for
// the same connections. It is safe for concurrent use and needs no Close.
//
// Grants go to the highest priority first and in arrival order within a
// priority. Prefetch never takes the last quarter of the slots (at least one
// when there are two or more) and is never granted while anything of higher
// priority is queued, so a demand read finds a slot at once while prefetch
// is saturated. Read-ahead may take every slot (one sequential reader needs
// them all to read at the server's full rate). When every slot is busy, a
// background fetch gives its slot up at its next chunk boundary, one fetch
// per queued request (see shouldYield and runWriter.advance), so a queued
// demand read waits for about one chunk, not for a whole background piece.
//
// The Pool is the one place that decides how many fetches run at once. When
// the server sheds load (a 429 or 503, reported by ReportLoad, which a
// fetch.Client calls through its Options.OnLoad) the limit halves, at least
// to one; a run of successes as long as the limit raises it by one, up to the
// connections given to NewPool (AIMD, as TCP adapts its window). Overloads
// from fetches granted before the last decrease are the same congestion
// event and do not decrease it again. While lowered, the Pool still grants by
// priority, so a demand read never waits behind prefetch for a slot.
type Pool struct {
	// capacity is the connections given to NewPool, the most the limit
	// reaches; Files size their read-ahead and Fill by it. Read-only.
	capacity int

	mu        sync.Mutex
	limit     int // slots now, 1..capacity (see ReportLoad)
	reserve   int // slots prefetch leaves free for demand, of limit
	epoch     uint64
	successes int // answers without overload since the limit last changed
	active    int
	queue     [numPrio][]*poolWaiter
	maxSeen   int // highest active count observed (tests, Stats of the pool)
	// yielding counts slots that background fetches promised to give up
	// at their next chunk boundary (see shouldYield) and that no queued
	// request has received yet.
	yielding int
}

type poolWaiter struct {
	ready   chan struct{} // closed when the slot is granted
	granted bool          // guarded by Pool.mu
	epoch   uint64        // the Pool's epoch at the grant; guarded by Pool.mu
}

// NewPool returns a Pool allowing connections concurrent fetches
// (at least 1).
func NewPool(connections int) *Pool {
	connections = max(connections, 1)
	return &Pool{capacity: connections, limit: connections, reserve: reserveFor(connections)}
}

// reserveFor is how many of limit slots prefetch leaves to demand: a
// quarter, at least one when there are two or more.
func reserveFor(limit int) int {
	if limit > 1 {
		return max(1, limit/4)
	}
	return 0
}

// poolSlotKey marks a fetch's ctx with the epoch its slot was granted in,
// so ReportLoad can tell a new congestion event from an old one.
type poolSlotKey struct{}

type poolSlot struct {
	pool  *Pool
	epoch uint64
}

// ReportLoad tells the Pool what an answer of the server said about its
// load: overloaded (429 or 503) or not. ctx is the ctx of the fetch that got
// it (a descendant of the one the Pool granted), or any other for a request
// the Pool did not grant. Its signature fits fetch.Options.OnLoad. Safe for
// concurrent use.
func (p *Pool) ReportLoad(ctx context.Context, overloaded bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	epoch := p.epoch
	if s, found := ctx.Value(poolSlotKey{}).(poolSlot); found && s.pool == p {
		epoch = s.epoch
	}
	if overloaded {
		p.successes = 0
		if epoch == p.epoch {
			p.epoch++
			p.setLimit(max(1, p.limit/2))
		}
		return
	}
	p.successes++
	if p.successes >= p.limit && p.limit < p.capacity {
		p.setLimit(p.limit + 1)
	}
}

// Limit is how many fetches the Pool lets run at once now: its connections,
// lowered while a server sheds load (see ReportLoad). Safe for concurrent use.
func (p *Pool) Limit() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limit
}

// setLimit changes the limit and grants what it now allows. p.mu is held.
func (p *Pool) setLimit(n int) {
	p.limit, p.reserve, p.successes = n, reserveFor(n), 0
	p.dispatch()
}

// admit is acquire for a fetch: it returns ctx marked with the slot (see
// ReportLoad), to run the fetch on.
func (p *Pool) admit(ctx context.Context, prio priority) (context.Context, func(), error) {
	release, epoch, err := p.acquireEpoch(ctx, prio)
	if err != nil {
		return ctx, nil, err
	}
	return context.WithValue(ctx, poolSlotKey{}, poolSlot{pool: p, epoch: epoch}), release, nil
}

// canGrant reports whether a request at prio may start now. p.mu is held.
func (p *Pool) canGrant(prio priority) bool {
	if prio == prioPrefetch {
		for q := prioDemand; q < prioPrefetch; q++ {
			if len(p.queue[q]) > 0 {
				return false
			}
		}
		return p.active < p.limit-p.reserve
	}
	return p.active < p.limit
}

// acquire waits for a slot at prio. It returns a release function to call
// exactly once when the fetch is over, or ctx.Err() if ctx ends first.
func (p *Pool) acquire(ctx context.Context, prio priority) (release func(), err error) {
	release, _, err = p.acquireEpoch(ctx, prio)
	return release, err
}

// acquireEpoch is acquire that also returns the epoch of the grant.
func (p *Pool) acquireEpoch(ctx context.Context, prio priority) (release func(), epoch uint64, err error) {
	p.mu.Lock()
	if p.queuedAtOrAbove(prio) == 0 && p.canGrant(prio) {
		p.take()
		epoch = p.epoch
		p.mu.Unlock()
		return p.releaseOnce(), epoch, nil
	}
	w := &poolWaiter{ready: make(chan struct{})}
	p.queue[prio] = append(p.queue[prio], w)
	p.mu.Unlock()

	select {
	case <-w.ready:
		p.mu.Lock()
		epoch = w.epoch
		p.mu.Unlock()
		return p.releaseOnce(), epoch, nil
	case <-ctx.Done():
		p.mu.Lock()
		if w.granted {
			// Granted while we were giving up: hand the slot on.
			p.active--
			p.dispatch()
		} else {
			p.remove(prio, w)
		}
		p.mu.Unlock()
		return nil, 0, ctx.Err()
	}
}

// queuedAtOrAbove counts waiters that must go before a new request at prio.
func (p *Pool) queuedAtOrAbove(prio priority) int {
	n := 0
	for q := prioDemand; q <= prio; q++ {
		n += len(p.queue[q])
	}
	return n
}

// shouldYield is asked by a background fetch at prio at each chunk
// boundary: it reports whether the fetch should end there and hand its slot
// to a better request queued for one, and if so counts the promise, so one
// queued request makes one fetch yield, not every fetch that reaches a
// boundary before the slot is handed over. left is the number of chunks the
// fetch would still write after the boundary. A fetch with at most one chunk
// left only yields to demand: it ends within about a chunk's time anyway,
// and ending it early costs its connection and, for the chunk given back, a
// new request.
func (p *Pool) shouldYield(prio priority, left int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	waiting := len(p.queue[prioDemand])
	if left > 1 {
		for q := prioDemand + 1; q < prio; q++ {
			waiting += len(p.queue[q])
		}
	}
	if prio == prioDemand || waiting <= p.yielding {
		return false
	}
	p.yielding++
	return true
}

func (p *Pool) take() {
	p.active++
	p.maxSeen = max(p.maxSeen, p.active)
}

func (p *Pool) releaseOnce() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.active--
			p.dispatch()
			p.mu.Unlock()
		})
	}
}

// dispatch grants free slots to queued waiters, best priority first.
// p.mu is held.
func (p *Pool) dispatch() {
	for prio := prioDemand; prio < numPrio; prio++ {
		for len(p.queue[prio]) > 0 && p.canGrant(prio) {
			w := p.queue[prio][0]
			p.queue[prio][0] = nil
			p.queue[prio] = p.queue[prio][1:]
			w.granted = true
			w.epoch = p.epoch
			p.take()
			p.yielding = max(0, p.yielding-1)
			close(w.ready)
		}
		if len(p.queue[prio]) > 0 {
			// Lower priorities wait behind a blocked higher one.
			return
		}
	}
}

func (p *Pool) remove(prio priority, w *poolWaiter) {
	q := p.queue[prio]
	for i, x := range q {
		if x == w {
			copy(q[i:], q[i+1:])
			q[len(q)-1] = nil
			p.queue[prio] = q[:len(q)-1]
			break
		}
	}
	// A promise made for the removed waiter is for nobody now.
	p.yielding = min(p.yielding, p.queuedAtOrAbove(numPrio-1))
	// A removed head may have been blocking lower priorities.
	p.dispatch()
}

// stats returns the current and the highest observed number of slots in use.
func (p *Pool) stats() (active, maxSeen int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active, p.maxSeen
}

// String names the priority in logs.
func (p priority) String() string {
	switch p {
	case prioDemand:
		return "demand"
	case prioReadAhead:
		return "read-ahead"
	case prioBulk:
		return "bulk"
	case prioPrefetch:
		return "prefetch"
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}
