package cachetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"rangefs/fetch/fetchtest/content"
)

// Source is the one fake remote file of the cache and fs tests: it has
// cache.Source's Fetch method, serves a content.Reader (or any bytes) and
// records what it is asked for, with switches for the faults and timings a
// test needs. It never touches the network.
//
// Size is fixed by the constructor. WriteSize, StartedNoWait and CountChunk
// are set before the first Fetch. The other exported fields are the
// switches: set them before the first Fetch, or later through Set (they are
// guarded by a mutex that Fetch takes). The methods are safe for concurrent
// use.
type Source struct {
	size    int64
	content io.ReaderAt

	// WriteSize is the bytes per Write call; 0 means 64 KiB.
	WriteSize int
	// StartedNoWait makes a call that finds Started full go on without
	// sending (for a test that looks only at the first calls) instead of
	// waiting until the test receives.
	StartedNoWait bool
	// CountChunk, if > 0, counts the bytes the caller accepted per chunk
	// of that many bytes (see Received): a chunk fetched twice shows up as
	// more than its length.
	CountChunk int64

	mu sync.Mutex
	// FailN fails that many next calls with ErrInjected, before writing.
	FailN int
	// Changed fails every call with a ChangedError, as a Source does when
	// the remote's validator differs.
	Changed bool
	// Partial, if > 0, makes the next call write this many bytes (at most
	// its length), then fail with ErrInjected.
	Partial int64
	// Gate, if set, returns a channel the call waits on before writing
	// (nil: no wait). It is called without the mutex held.
	Gate func(off, n int64) <-chan struct{}
	// Started, if set, receives every call as it begins.
	Started chan Call
	// Delay, if > 0, slows every call by that long before its gate.
	Delay time.Duration
	// Pause, if set, is called (without the mutex) before each Write after
	// the first, with the call's offset and the bytes written so far; a
	// non-nil channel is waited on.
	Pause func(off, done int64) <-chan struct{}
	// Rate, if > 0, paces every call to Rate bytes/s, as a server that
	// caps each connection does (one call is one connection).
	Rate int64
	// DownUntil, if set, makes the remote unreachable until then: Fetch
	// retries the way fetch.Client does with RetryUntilDeadline, every
	// OutageRetry, until the ctx deadline if there is one (giving up when
	// less than OutageRetry is left), else for OutageAttempts attempts.
	DownUntil time.Time
	// Answered, if set, is called (without the mutex) with each call's ctx
	// once it passed its gate, as a fetch.Client calls Options.OnLoad for
	// an answer.
	Answered func(ctx context.Context)

	calls     []Call
	bytes     int64
	active    int
	maxActive int
	attempts  int             // attempts that met the outage
	perChunk  map[int64]int64 // with CountChunk: bytes accepted per chunk
}

// Call records one Fetch: its offset and length.
type Call struct{ Off, N int64 }

// NewSource returns a Source serving content.New(size, seed).
func NewSource(size int64, seed uint64) *Source {
	return &Source{size: size, content: content.New(size, seed)}
}

// BytesSource returns a Source serving b (which it does not copy: the
// caller does not change it while the Source is in use).
func BytesSource(b []byte) *Source {
	return &Source{size: int64(len(b)), content: bytes.NewReader(b)}
}

var (
	// ErrInjected is the error of FailN and Partial.
	ErrInjected = errors.New("fake: injected failure")
	// ErrOutage is what a call gives up with during DownUntil.
	ErrOutage = errors.New("fake: connection refused")
)

// ChangedError is the error of Changed: it has the RemoteChanged method
// cache.IsRemoteChanged looks for.
type ChangedError struct{}

func (ChangedError) Error() string       { return "fake: remote changed" }
func (ChangedError) RemoteChanged() bool { return true }

// The retry schedule of DownUntil.
const (
	OutageRetry    = 10 * time.Millisecond
	OutageAttempts = 3
)

// Size is the length of the content.
func (s *Source) Size() int64 { return s.size }

// Fetch writes the content's bytes [off, off+n) to w, subject to the
// switches.
func (s *Source) Fetch(ctx context.Context, off, n int64, w io.Writer) error {
	s.mu.Lock()
	s.calls = append(s.calls, Call{off, n})
	s.active++
	s.maxActive = max(s.maxActive, s.active)
	fail := s.FailN > 0
	if fail {
		s.FailN--
	}
	changed := s.Changed
	partial := s.Partial
	s.Partial = 0
	gate, started, delay, pause, answered, rate := s.Gate, s.Started, s.Delay, s.Pause, s.Answered, s.Rate
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()
	if started != nil {
		if s.StartedNoWait {
			select {
			case started <- Call{off, n}:
			default:
			}
		} else {
			started <- Call{off, n}
		}
	}
	if err := s.outage(ctx); err != nil {
		return err
	}
	if delay > 0 {
		if err := sleep(ctx, delay); err != nil {
			return err
		}
	}
	if gate != nil {
		if err := wait(ctx, gate(off, n)); err != nil {
			return err
		}
	}
	if answered != nil {
		answered(ctx)
	}
	switch {
	case fail:
		return ErrInjected
	case changed:
		return fmt.Errorf("fake: %w", ChangedError{})
	case off < 0 || n < 0 || off+n > s.size:
		return fmt.Errorf("fake: range %d+%d outside size %d", off, n, s.size)
	}
	ws := int64(s.WriteSize)
	if ws == 0 {
		ws = 64 << 10
	}
	limit := n
	if partial > 0 {
		limit = min(partial, n)
	}
	begun := time.Now()
	buf := make([]byte, min(ws, limit))
	for done := int64(0); done < limit; {
		if err := ctx.Err(); err != nil {
			return err
		}
		if pause != nil && done > 0 {
			if err := wait(ctx, pause(off, done)); err != nil {
				return err
			}
		}
		k := min(ws, limit-done)
		if r, err := s.content.ReadAt(buf[:k], off+done); int64(r) != k {
			return fmt.Errorf("fake: reading the content at %d: %v", off+done, err)
		}
		m, err := w.Write(buf[:k])
		s.mu.Lock()
		s.bytes += int64(m)
		s.count(off+done, int64(m))
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("fake: write: %w", err)
		}
		done += k
		if rate > 0 {
			if err := sleep(ctx, time.Until(begun.Add(time.Duration(done*int64(time.Second)/rate)))); err != nil {
				return err
			}
		}
	}
	if partial > 0 {
		return ErrInjected
	}
	return nil
}

// wait waits for ch (nil: not at all) or the end of ctx.
func wait(ctx context.Context, ch <-chan struct{}) error {
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// outage waits out DownUntil as a retrying client would (see DownUntil),
// and returns the error it gives up with.
func (s *Source) outage(ctx context.Context) error {
	deadline, bounded := ctx.Deadline()
	for n := 1; ; n++ {
		s.mu.Lock()
		down := time.Now().Before(s.DownUntil)
		if down {
			s.attempts++
		}
		s.mu.Unlock()
		if !down {
			return nil
		}
		switch {
		case bounded && time.Until(deadline) < OutageRetry:
			return fmt.Errorf("giving up at the deadline after %d attempts: %w", n, ErrOutage)
		case !bounded && n >= OutageAttempts:
			return fmt.Errorf("giving up after %d attempts: %w", n, ErrOutage)
		}
		if err := sleep(ctx, OutageRetry); err != nil {
			return err
		}
	}
}

// count adds the n accepted bytes at off to perChunk, if counting. s.mu is
// held.
func (s *Source) count(off, n int64) {
	if s.CountChunk <= 0 {
		return
	}
	if s.perChunk == nil {
		s.perChunk = make(map[int64]int64)
	}
	for n > 0 {
		i := off / s.CountChunk
		k := min(n, (i+1)*s.CountChunk-off)
		s.perChunk[i] += k
		off, n = off+k, n-k
	}
}

// Set runs fn with the switches locked.
func (s *Source) Set(fn func(s *Source)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

// Hold makes every call wait on ch before writing (a server gone silent
// until ch is closed); nil lets them through again.
func (s *Source) Hold(ch <-chan struct{}) {
	s.Set(func(s *Source) {
		s.Gate = nil
		if ch != nil {
			s.Gate = func(int64, int64) <-chan struct{} { return ch }
		}
	})
}

// Calls returns the calls so far, in the order they began.
func (s *Source) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// NCalls is how many calls began.
func (s *Source) NCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// ResetCalls forgets the calls so far (Calls and NCalls start again from
// none; the other counters go on).
func (s *Source) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// Bytes is how many bytes the writers accepted, over all calls.
func (s *Source) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// MaxActive is the most calls that ran at once.
func (s *Source) MaxActive() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxActive
}

// Attempts is how many attempts met the DownUntil outage.
func (s *Source) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// Received is how many bytes of chunk i (of CountChunk bytes) the writers
// accepted; it panics unless CountChunk is set.
func (s *Source) Received(i int64) int64 {
	s.mustCount()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perChunk[i]
}

// ChunksReceived is how many chunks (of CountChunk bytes) had any bytes
// accepted; it panics unless CountChunk is set.
func (s *Source) ChunksReceived() int {
	s.mustCount()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.perChunk)
}

func (s *Source) mustCount() {
	if s.CountChunk <= 0 {
		panic("cachetest: per-chunk counts need Source.CountChunk")
	}
}
