package fetch

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
)

// adaptiveLimit bounds the requests a Client has in flight and adapts the bound to what the
// server says, the way TCP adapts its window (AIMD): an overload answer (429 or 503) halves
// the bound (at least 1), and a run of successes as long as the current bound raises it by
// one, up to max. A server that sheds load is thus asked less, and a healthy one gets back
// to full parallelism after a few round trips.
//
// Requests admitted before a decrease that come back overloaded are the same congestion
// event, not a new one: each slot carries the epoch it was admitted in, and only an
// overload from the current epoch decreases again (so a burst of 8 simultaneous 429s
// halves once, not three times).
//
// Waiting for a slot is FIFO and honours the caller's ctx. The cost per request is two
// short critical sections; no goroutine, timer or allocation unless the caller must wait.
// Safe for concurrent use.
type adaptiveLimit struct {
	mu       sync.Mutex
	max      int
	limit    int
	inFlight int
	epoch    uint64          // bumped by each decrease
	run      int             // successes since the last change of limit
	waiters  []chan struct{} // FIFO; closing a channel hands its waiter a slot
}

// newAdaptiveLimit starts at ceiling (at least 1): a fresh Client trusts the server.
func newAdaptiveLimit(ceiling int) *adaptiveLimit {
	ceiling = max(ceiling, 1)
	return &adaptiveLimit{max: ceiling, limit: ceiling}
}

// outcome is what a finished request tells the limit.
type outcome int

const (
	outcomeNeutral  outcome = iota // no answer (transport error) or an answer that says nothing about load
	outcomeSuccess                 // an answer from a server that was not overloaded
	outcomeOverload                // 429 or 503
)

// outcomeOf classifies a final response status.
func outcomeOf(code int) outcome {
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		return outcomeOverload
	case code < 500:
		return outcomeSuccess
	}
	return outcomeNeutral
}

// acquire waits for a slot and returns the epoch it was admitted in. It returns ctx.Err()
// without a slot when ctx ends first.
func (l *adaptiveLimit) acquire(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l.mu.Lock()
	if l.inFlight < l.limit && len(l.waiters) == 0 {
		l.inFlight++
		e := l.epoch
		l.mu.Unlock()
		return e, nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	l.mu.Unlock()

	select {
	case <-ch:
		l.mu.Lock()
		e := l.epoch
		l.mu.Unlock()
		return e, nil
	case <-ctx.Done():
		l.mu.Lock()
		if i := slices.Index(l.waiters, ch); i >= 0 {
			l.waiters = slices.Delete(l.waiters, i, i+1)
			l.mu.Unlock()
			return 0, ctx.Err()
		}
		l.mu.Unlock()
		// The slot was granted while ctx ended: hand it on.
		l.release(0, outcomeNeutral)
		return 0, ctx.Err()
	}
}

// release returns a slot admitted in epoch and applies what the request found out. It
// reports the new limit when this call lowered it, else 0.
func (l *adaptiveLimit) release(epoch uint64, o outcome) (lowered int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	switch o {
	case outcomeOverload:
		l.run = 0
		if epoch == l.epoch {
			l.epoch++
			if l.limit > 1 {
				l.limit /= 2
				lowered = l.limit
			}
		}
	case outcomeSuccess:
		l.run++
		if l.run >= l.limit && l.limit < l.max {
			l.limit++
			l.run = 0
		}
	}
	for l.inFlight < l.limit && len(l.waiters) > 0 {
		ch := l.waiters[0]
		l.waiters[0] = nil
		l.waiters = l.waiters[1:]
		l.inFlight++
		close(ch)
	}
	return lowered
}

// current returns the limit and the requests in flight (tests and log records).
func (l *adaptiveLimit) current() (limit, inFlight int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit, l.inFlight
}

// slotBody holds a request's slot until its body is closed: the connection is busy until
// then, so the server is still serving us. Close releases the slot once, and with
// Options.OnLoad hands the answer's outcome to the caller instead of to the limit.
type slotBody struct {
	io.ReadCloser
	ctx      context.Context // the request's
	c        *Client
	lim      *adaptiveLimit
	epoch    uint64
	outcome  outcome
	conn     *watchedConn // the connection it arrives on; nil if unknown
	released atomic.Bool
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	if b.released.CompareAndSwap(false, true) {
		if onLoad := b.c.o.OnLoad; onLoad != nil {
			b.c.releaseSlot(b.lim, b.epoch, outcomeNeutral)
			if b.outcome != outcomeNeutral {
				onLoad(b.ctx, b.outcome == outcomeOverload)
			}
		} else {
			b.c.releaseSlot(b.lim, b.epoch, b.outcome)
		}
	}
	return err
}
