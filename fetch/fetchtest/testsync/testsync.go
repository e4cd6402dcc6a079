// Package testsync holds the small synchronisation helpers that tests of every layer
// share: a buffer that concurrent writers (a slog handler, a child's stderr) may fill while
// the test reads it, and a bounded wait for a condition that has no event to wait on.
//
// It imports the standard library only, so cache and fs tests may use it without
// crossing the package arrows.
package testsync

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent use: Write may be called from any
// goroutine while String reads what has arrived so far. The zero value is empty and ready.
type Buffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

// Write appends p; it never fails.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns a copy of everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// WaitFor polls cond every 2 ms until it holds, and fails the test if it does not within
// d. It is for states a test can only observe (a background prefetch finishing, a handler
// goroutine's counters): where there is an event, wait on the event instead.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}
