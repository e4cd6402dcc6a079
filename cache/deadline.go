package cache

import (
	"context"
	"sync"
	"time"
)

// Demand runs and deadlines.
//
// A demand run is fetched for readers that wait with a deadline (a FUSE
// read's op timeout). The Source may retry a failing fetch until its ctx's
// deadline (fetch's RetryUntilDeadline), so the run's ctx reports one: the
// latest deadline among the reads waiting on it, extended as more join. A
// run with a waiter that has no deadline has none either, and so has every
// background run (read-ahead, Fill, prefetch): those are bounded by the
// Source's attempt count, as before.
//
// The deadline bounds retries only: the run's ctx is not cancelled there,
// so a transfer that is progressing when every reader gave up completes and
// is cached for the next read (as a run without a deadline always did), and
// one impatient reader never cuts a run others wait for. A Source reads the
// deadline when a fetch starts; if it gives up at that deadline while a
// reader that joined later could wait longer, the run ends as abandoned (not
// failed) and that reader claims the chunks again, with its own deadline.

// waitDeadline is the deadline of a demand read's ctx, or none.
type waitDeadline struct {
	at      time.Time
	bounded bool
}

func deadlineOf(ctx context.Context) waitDeadline {
	at, bounded := ctx.Deadline()
	return waitDeadline{at: at, bounded: bounded}
}

// later reports whether d lets a fetch go on longer than e.
func (d waitDeadline) later(e waitDeadline) bool {
	return e.bounded && (!d.bounded || d.at.After(e.at))
}

// extendDeadline makes demand run r last at least until d, a new waiter's
// deadline. File.mu is held.
func (r *run) extendDeadline(d waitDeadline) {
	if !d.later(r.deadline) {
		return
	}
	r.deadline = d
	if r.ctx != nil {
		r.ctx.extend(d)
	}
}

// minDeadlineGain is how much later than the deadline a fetch started with a
// waiter's deadline must be for the run to end abandoned, so that the waiter
// fetches again, instead of failed: less is not worth another attempt.
const minDeadlineGain = 20 * time.Millisecond

// outlived reports whether a waiter joined run r with a deadline well past
// started, the one its fetch began with. File.mu is held.
func (r *run) outlived(started waitDeadline) bool {
	if !r.deadline.bounded {
		return started.bounded
	}
	return started.bounded && r.deadline.at.Sub(started.at) >= minDeadlineGain
}

// runContext is the ctx of a demand run with a deadline: the File's fetch
// ctx (it ends when that does, never at the deadline), with a Deadline that
// can only move later (extend). Deadline reports the current one; a Source
// that reads it when a fetch starts sees the deadline of that moment (see
// outlived for the rest).
type runContext struct {
	context.Context

	mu       sync.Mutex
	deadline waitDeadline
}

func newRunContext(parent context.Context, d waitDeadline) *runContext {
	return &runContext{Context: parent, deadline: d}
}

func (c *runContext) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline.at, c.deadline.bounded
}

// extend moves the deadline to d if that is later (an unbounded d removes
// it).
func (c *runContext) extend(d waitDeadline) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.later(c.deadline) {
		c.deadline = d
	}
}
