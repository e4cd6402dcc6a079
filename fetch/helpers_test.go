package fetch

import (
	"bytes"
	"context"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// testSize is deliberately not a multiple of anything interesting.
const testSize = 3<<20 + 12345

// fastOptions are Options with the retry timers and the stall watchdog shrunk so fault
// tests finish in milliseconds. The header watchdog stays long: a loaded machine can delay
// a healthy answer's header past a short one, and the retry that follows changes the
// requests a test counts; a test whose fault only the header watchdog ends sets
// shortHeaderTimeout.
func fastOptions() Options {
	return Options{
		ResponseHeaderTimeout: 10 * time.Second,
		StallTimeout:          200 * time.Millisecond,
		MinProgress:           16 << 10,
		MaxAttempts:           4,
		RetryBase:             time.Millisecond,
		RetryCap:              5 * time.Millisecond,
		RetryAfterCap:         300 * time.Millisecond,
	}
}

// shortHeaderTimeout is the header watchdog of tests whose fault only it ends (a black
// hole, a dead kept-alive connection).
const shortHeaderTimeout = 500 * time.Millisecond

// withoutWatchdogs is o with the header and stall watchdogs set far beyond any answer of a
// healthy test server, for attempts no fault stops: a loaded machine can delay a healthy
// answer past fastOptions' 200 ms stall watchdog, and the retry that follows changes the
// request and connection counts a test asserts.
func withoutWatchdogs(o Options) Options {
	o.ResponseHeaderTimeout = time.Minute
	o.StallTimeout = time.Minute
	return o
}

// newTestServer serves Pattern(testSize, 7) and closes it when the test ends.
func newTestServer(t testing.TB, opts ...fetchtest.Option) (*fetchtest.Server, *fetchtest.PatternReader) {
	t.Helper()
	p := fetchtest.Pattern(testSize, 7)
	s := fetchtest.NewServer(p, p.Size(), opts...)
	t.Cleanup(s.Close)
	return s, p
}

func newTestClient(t testing.TB, o Options) *Client {
	t.Helper()
	c := NewClient(o)
	t.Cleanup(c.Close)
	return c
}

// ctxT is a context bounded well below the package's test budget, so that a hang is a
// failure, not a stuck run.
func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustProbe(t testing.TB, c *Client, url string) *Object {
	t.Helper()
	o, err := c.Probe(ctxT(t), url)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return o
}

// checkBytes compares got with the pattern at off.
func checkBytes(t testing.TB, got []byte, p *fetchtest.PatternReader, off int64) {
	t.Helper()
	want := p.Bytes(off, int64(len(got)))
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("bytes differ from the reference at offset %d (+%d of %d)", off+int64(i), i, len(got))
	}
}

// countMethod counts requests with method m in the server log.
func countMethod(s *fetchtest.Server, m string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == m {
			n++
		}
	}
	return n
}
