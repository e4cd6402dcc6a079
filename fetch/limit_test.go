package fetch

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// mustAcquire takes a slot that must be free now.
func mustAcquire(t *testing.T, l *adaptiveLimit) uint64 {
	t.Helper()
	l.mu.Lock()
	free := l.inFlight < l.limit && len(l.waiters) == 0
	l.mu.Unlock()
	if !free {
		t.Fatal("no free slot")
	}
	e, err := l.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// blocked reports whether acquire waits (it gives up after a short ctx, leaving no trace).
func blocked(l *adaptiveLimit) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.acquire(ctx); err != nil {
		return true
	}
	l.release(0, outcomeNeutral)
	return false
}

func checkLimit(t *testing.T, l *adaptiveLimit, wantLimit, wantInFlight int) {
	t.Helper()
	if lim, n := l.current(); lim != wantLimit || n != wantInFlight {
		t.Fatalf("limit %d, in flight %d; want %d, %d", lim, n, wantLimit, wantInFlight)
	}
}

// AIMD: an overload halves the limit once per congestion event (slots admitted before the
// decrease do not decrease again), never below 1; a run of successes as long as the limit
// raises it by one, never above the ceiling.
func TestAdaptiveLimitAIMD(t *testing.T) {
	l := newAdaptiveLimit(8)
	var epochs []uint64
	for range 8 {
		epochs = append(epochs, mustAcquire(t, l))
	}
	if !blocked(l) {
		t.Fatal("a ninth request got a slot with a limit of 8")
	}
	checkLimit(t, l, 8, 8)

	// A burst of 429s from the 8 requests admitted together: one halving.
	for i := range 4 {
		if got := l.release(epochs[i], outcomeOverload); (i == 0) != (got == 4) {
			t.Fatalf("overload %d of one burst: lowered to %d", i, got)
		}
	}
	checkLimit(t, l, 4, 4)
	if !blocked(l) {
		t.Fatal("got a slot with 4 in flight and a limit of 4")
	}
	for i := 4; i < 8; i++ {
		l.release(epochs[i], outcomeNeutral)
	}
	checkLimit(t, l, 4, 0)

	// Overloads admitted after each decrease halve again: 4 -> 2 -> 1 -> 1 (at the floor
	// nothing is lowered, so nothing is reported).
	for i, want := range []int{2, 1, 1} {
		e := mustAcquire(t, l)
		if got, report := l.release(e, outcomeOverload), []int{2, 1, 0}[i]; got != report {
			t.Fatalf("overload %d reported a decrease to %d, want %d", i, got, report)
		}
		checkLimit(t, l, want, 0)
	}
	e := mustAcquire(t, l)
	if !blocked(l) {
		t.Fatal("limit 1 let a second request through")
	}
	l.release(e, outcomeNeutral)

	// Additive increase: limit k needs k successes to become k+1; 1+2+...+7 = 28 to reach 8.
	for lim := 1; lim < 8; lim++ {
		for range lim {
			checkLimit(t, l, lim, 0)
			l.release(mustAcquire(t, l), outcomeSuccess)
		}
	}
	checkLimit(t, l, 8, 0)
	for range 50 {
		l.release(mustAcquire(t, l), outcomeSuccess)
	}
	checkLimit(t, l, 8, 0)

	// A neutral outcome (transport error, 500) changes nothing; an overload resets the run.
	l2 := newAdaptiveLimit(4)
	l2.release(mustAcquire(t, l2), outcomeOverload) // 2
	l2.release(mustAcquire(t, l2), outcomeSuccess)  // run 1 of 2
	l2.release(mustAcquire(t, l2), outcomeNeutral)
	checkLimit(t, l2, 2, 0)
	l2.release(mustAcquire(t, l2), outcomeSuccess) // run 2 of 2: 3
	checkLimit(t, l2, 3, 0)

	if l0 := newAdaptiveLimit(0); !func() bool { lim, _ := l0.current(); return lim == 1 }() {
		t.Fatal("a ceiling of 0 must still allow one request")
	}
	for code, want := range map[int]outcome{200: outcomeSuccess, 206: outcomeSuccess, 404: outcomeSuccess,
		429: outcomeOverload, 503: outcomeOverload, 500: outcomeNeutral, 502: outcomeNeutral} {
		if got := outcomeOf(code); got != want {
			t.Errorf("outcomeOf(%d) = %d, want %d", code, got, want)
		}
	}
}

// Waiters are served in order as slots free up; a waiter whose ctx ends leaves without
// holding or leaking a slot; a rise of the limit wakes as many waiters as it allows.
func TestAdaptiveLimitWaiters(t *testing.T) {
	l := newAdaptiveLimit(2)
	l.release(mustAcquire(t, l), outcomeOverload) // limit 1
	held := mustAcquire(t, l)

	queued := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.waiters)
	}
	waitQueued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); queued() != n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d waiters queued, want %d", queued(), n)
			}
		}
	}
	granted := make(chan int, 3)
	var wg sync.WaitGroup
	wait := func(i int) {
		wg.Go(func() {
			if _, err := l.acquire(context.Background()); err != nil {
				t.Error(err)
				return
			}
			granted <- i
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { _, err := l.acquire(ctx); gaveUp <- err }()
	waitQueued(1)
	wait(0)
	waitQueued(2)
	wait(1)
	waitQueued(3)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled waiter: %v", err)
	}
	waitQueued(2)
	checkLimit(t, l, 1, 1)

	// One slot frees: the first waiter (not the canceled one) gets it, the second waits on.
	l.release(held, outcomeNeutral)
	if i := <-granted; i != 0 {
		t.Fatalf("waiter %d served first, want 0", i)
	}
	waitQueued(1)
	checkLimit(t, l, 1, 1)

	// A success at limit 1 raises it to 2 as it frees a slot: both later waiters get one.
	wait(2)
	waitQueued(2)
	l.release(0, outcomeSuccess)
	wg.Wait()
	if a, b := <-granted, <-granted; a+b != 3 {
		t.Fatalf("granted %d and %d, want 1 and 2", a, b)
	}
	checkLimit(t, l, 2, 2)
}

// 429 answers to a burst of concurrent Fetches lower the number of requests the server sees
// at once, and a run of successes brings it back to Options.Connections.
func TestFetchOverloadLowersConcurrency(t *testing.T) {
	s, p := newTestServer(t)
	opt := fastOptions()
	opt.Connections = 8
	opt.MaxAttempts = 64 // every Fetch here must succeed, however many 429s it meets
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())

	const piece = 64 << 10
	// round runs 8 concurrent Fetches of one piece each and returns the most requests the
	// server had in flight at once.
	round := func() int64 {
		s.ResetStats()
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				off := int64(i) * piece
				var buf bytes.Buffer
				if err := o.Fetch(ctxT(t), off, piece, &buf); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf.Bytes(), p.Bytes(off, piece)) {
					t.Errorf("wrong bytes at %d", off)
				}
			})
		}
		wg.Wait()
		return s.Stats().MaxConcurrent
	}
	// A slow link makes each request last ~250 ms, so concurrent Fetches overlap at the
	// server and MaxConcurrent shows the client's limit.
	s.SetConnRate(256 << 10)
	before := round()

	s.SetConnRate(0)
	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 429, RetryAfter: "0", Times: 24, RangedOnly: true})
	round()
	lowered, _ := soleLimit(t, c).current()
	if lowered > opt.Connections/2 {
		t.Fatalf("after a burst of 429s the limit is %d, want at most %d", lowered, opt.Connections/2)
	}

	s.SetConnRate(256 << 10)
	during := round()
	after, _ := soleLimit(t, c).current() // the limit only grew during that round
	if during > int64(after) || after >= opt.Connections || during >= before {
		t.Fatalf("in flight at the server: %d before the 429s, %d after (limit %d -> %d); want fewer, within the limit",
			before, during, lowered, after)
	}

	// Recovery: successes raise the limit one step per run (bounded number of rounds).
	s.SetConnRate(0)
	for i := 0; i < 20; i++ {
		if lim, _ := soleLimit(t, c).current(); lim == opt.Connections {
			break
		}
		round()
	}
	if lim, _ := soleLimit(t, c).current(); lim != opt.Connections {
		t.Fatalf("limit %d after many successes, want back to %d", lim, opt.Connections)
	}
	s.SetConnRate(256 << 10)
	recovered := round()
	if recovered <= during {
		t.Fatalf("in flight at the server: %d recovered vs %d while lowered; want more", recovered, during)
	}
	t.Logf("max requests in flight at the server: %d before, %d after 429s (limit %d..%d), %d recovered",
		before, during, lowered, after, recovered)
}

// Thousands of concurrent callers: the server never sees more requests or connections than
// Options.Connections, every caller gets its bytes, and nothing is left waiting.
func TestFetchManyConcurrentCallers(t *testing.T) {
	s, p := newTestServer(t)
	opt := withoutWatchdogs(fastOptions()) // no fault: every request is counted
	opt.Connections = 4
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	s.ResetStats()
	const callers, n = 2000, 512
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			off := int64(i) * 1000
			var buf bytes.Buffer
			if err := o.Fetch(ctxT(t), off, n, &buf); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(buf.Bytes(), p.Bytes(off, n)) {
				t.Errorf("wrong bytes at %d", off)
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.MaxConcurrent > 4 || st.Connections > 4 || st.Requests != callers {
		t.Fatalf("server stats %+v; want %d requests, at most 4 at once on at most 4 connections", st, callers)
	}
	if lim, inFlight := soleLimit(t, c).current(); lim != 4 || inFlight != 0 {
		t.Fatalf("limit %d with %d in flight after all callers returned; want 4, 0", lim, inFlight)
	}
}

// soleLimit is the in-flight limit of the one host c has talked to.
func soleLimit(t *testing.T, c *Client) *adaptiveLimit {
	t.Helper()
	c.limitsMu.Lock()
	defer c.limitsMu.Unlock()
	if len(c.limits) != 1 {
		t.Fatalf("client has limits for %d hosts, want 1", len(c.limits))
	}
	for _, l := range c.limits {
		return l
	}
	return nil
}
