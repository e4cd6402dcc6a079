package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// restartOptions are fastOptions with deadline-bound retries and a backoff slow enough that
// a two-second outage costs tens of dials, not thousands.
func restartOptions(d *recordingDialer) Options {
	opt := fastOptions()
	opt.RetryUntilDeadline = true
	opt.RetryCap = 100 * time.Millisecond
	opt.DialContext = d.dial
	return opt
}

func (d *recordingDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.addrs)
}

// A server that restarts (connection refused for about two seconds): a Fetch with a
// 10-second deadline waits it out and gets the bytes, however many attempts that takes; the
// same outage fails a Fetch without a deadline after MaxAttempts, clearly and fast, never as
// "gone"; and a deadline shorter than the outage ends with the network error at the deadline.
func TestFetchRetriesUntilDeadlineThroughRestart(t *testing.T) {
	s, p := newTestServer(t)
	addr := s.Addr()
	d := &recordingDialer{}
	opt := restartOptions(d)
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	s.Close()
	c.Close() // no idle connection: every attempt dials the closed port

	// No budget: a fixed number of attempts, then "refused".
	guard, stop := context.WithCancel(context.Background()) // a cancel, not a deadline
	defer stop()
	time.AfterFunc(20*time.Second, stop) // never reached unless the rule is broken
	before := d.count()
	err := o.Fetch(guard, 0, 100, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "refused") || errors.Is(err, ErrGone) || isRemoteChanged(err) {
		t.Fatalf("Fetch without a deadline from a closed port: %v; want connection refused, not gone", err)
	}
	if n := d.count() - before; n != opt.MaxAttempts {
		t.Fatalf("%d dials without a deadline, want MaxAttempts = %d", n, opt.MaxAttempts)
	}

	// A deadline shorter than the outage: the real error, at the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = o.Fetch(ctx, 0, 100, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "refused") || errors.Is(err, ErrGone) {
		t.Fatalf("Fetch with a 500 ms deadline from a closed port: %v; want connection refused", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 1500*time.Millisecond {
		t.Fatalf("Fetch with a 500 ms deadline ended after %v; want it to retry until about the deadline", el)
	}

	// The restart: down for two seconds, then the same address serves again.
	t.Cleanup(fetchtest.RestartAfter(2*time.Second, p, p.Size(), addr))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before = d.count()
	start = time.Now()
	var buf bytes.Buffer
	if err := o.Fetch(ctx, 1000, 200000, &buf); err != nil {
		t.Fatalf("Fetch with a 10 s deadline through a 2 s restart, after %v and %d dials: %v",
			time.Since(start).Round(time.Millisecond), d.count()-before, err)
	}
	checkBytes(t, buf.Bytes(), p, 1000)
	if buf.Len() != 200000 {
		t.Fatalf("wrote %d bytes, want 200000", buf.Len())
	}
	if n := d.count() - before; n <= opt.MaxAttempts {
		t.Fatalf("%d dials through the restart; want more than MaxAttempts = %d", n, opt.MaxAttempts)
	}
}
