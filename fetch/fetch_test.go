package fetch

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

func TestFetchRanges(t *testing.T) {
	s, p := newTestServer(t)
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	for _, r := range []struct{ off, n int64 }{
		{0, 1}, {0, 1 << 20}, {1, 7}, {1<<20 - 3, 10}, {p.Size() - 1, 1}, {p.Size() - 300000, 300000}, {0, p.Size()},
	} {
		var buf bytes.Buffer
		if err := o.Fetch(ctxT(t), r.off, r.n, &buf); err != nil {
			t.Fatalf("Fetch(%d, %d): %v", r.off, r.n, err)
		}
		if int64(buf.Len()) != r.n {
			t.Fatalf("Fetch(%d, %d) wrote %d bytes", r.off, r.n, buf.Len())
		}
		checkBytes(t, buf.Bytes(), p, r.off)
	}
	for _, q := range s.Requests() {
		if q.Method != http.MethodGet {
			continue
		}
		if q.IfRange != o.ETag || q.Header.Get("Accept-Encoding") != "identity" {
			t.Fatalf("request %q: If-Range %q Accept-Encoding %q; want %q identity",
				q.Range, q.IfRange, q.Header.Get("Accept-Encoding"), o.ETag)
		}
	}
	// Out of bounds is refused without a request.
	before := s.Stats().Requests
	for _, r := range []struct{ off, n int64 }{{-1, 1}, {0, -1}, {p.Size(), 1}, {1, p.Size()}, {1 << 62, 1 << 62}} {
		if err := o.Fetch(ctxT(t), r.off, r.n, &bytes.Buffer{}); err == nil {
			t.Errorf("Fetch(%d, %d) out of bounds succeeded", r.off, r.n)
		}
	}
	if err := o.Fetch(ctxT(t), 5, 0, &bytes.Buffer{}); err != nil {
		t.Errorf("Fetch of 0 bytes: %v", err)
	}
	if after := s.Stats().Requests; after != before {
		t.Errorf("refused/empty fetches sent %d requests", after-before)
	}
}

// Faults that heal after one request: the retry delivers the right bytes, and the range the
// retry asks for is exactly the part not yet delivered.
func TestFetchRecoversFromTransientFaults(t *testing.T) {
	const off, n = 100000, 1 << 20
	const cut = 300000
	for _, tc := range []struct {
		name       string
		fault      fetchtest.Fault
		wantRanges []string
	}{
		{"short body", fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: cut},
			[]string{"bytes=100000-1148575", "bytes=400000-1148575"}},
		// A RST may make the kernel drop bytes already received but not yet read: the
		// retry starts somewhere in [off, off+cut].
		{"reset", fetchtest.Fault{Kind: fetchtest.Reset, Arg: cut},
			[]string{"bytes=100000-1148575", "bytes=100000..400000-1148575"}},
		{"stall mid-body", fetchtest.Fault{Kind: fetchtest.Stall, Arg: cut},
			[]string{"bytes=100000-1148575", "bytes=400000-1148575"}},
		{"stall before body", fetchtest.Fault{Kind: fetchtest.Stall, Arg: 0},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"black hole", fetchtest.Fault{Kind: fetchtest.BlackHole},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"wrong range", fetchtest.Fault{Kind: fetchtest.WrongRange, Arg: 4096},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"multipart", fetchtest.Fault{Kind: fetchtest.Multipart},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"reversed Content-Range", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: "bytes 5-3/10"},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"unsatisfied Content-Range", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: fmt.Sprintf("bytes */%d", testSize)},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"unsatisfied Content-Range */10", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: "bytes */10"},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"signed Content-Range", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: fmt.Sprintf("bytes +100000-1148575/%d", testSize)},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"huge Content-Range", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: "bytes 100000-1148575/99999999999999999999999"},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"500", fetchtest.Fault{Kind: fetchtest.Status, Code: 500},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"502", fetchtest.Fault{Kind: fetchtest.Status, Code: 502},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"503", fetchtest.Fault{Kind: fetchtest.Status, Code: 503},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"504", fetchtest.Fault{Kind: fetchtest.Status, Code: 504},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"408", fetchtest.Fault{Kind: fetchtest.Status, Code: 408},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
		{"429", fetchtest.Fault{Kind: fetchtest.Status, Code: 429},
			[]string{"bytes=100000-1148575", "bytes=100000-1148575"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := newTestServer(t)
			// Only the watchdog that ends the faulty attempt stays short: the other
			// could end a healthy attempt a loaded machine delays, and add a range.
			opt := withoutWatchdogs(fastOptions())
			switch tc.fault.Kind {
			case fetchtest.Stall:
				opt.StallTimeout = fastOptions().StallTimeout
			case fetchtest.BlackHole:
				opt.ResponseHeaderTimeout = shortHeaderTimeout
			}
			c := newTestClient(t, opt)
			o := mustProbe(t, c, s.URL())
			s.ResetStats()
			f := tc.fault
			f.Times = 1
			s.Inject(f)
			var buf bytes.Buffer
			if err := o.Fetch(ctxT(t), off, n, &buf); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if buf.Len() != n {
				t.Fatalf("wrote %d bytes, want %d", buf.Len(), n)
			}
			checkBytes(t, buf.Bytes(), p, off)
			if got := s.Ranges(); !rangesMatch(got, tc.wantRanges) {
				t.Fatalf("ranges asked = %q, want %q", got, tc.wantRanges)
			}
		})
	}
}

// rangesMatch compares Range headers with patterns; "bytes=LO..HI-END" accepts any start in
// [LO, HI].
func rangesMatch(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		var lo, hi, end, a, b int64
		if _, err := fmt.Sscanf(want[i], "bytes=%d..%d-%d", &lo, &hi, &end); err == nil {
			if _, err := fmt.Sscanf(got[i], "bytes=%d-%d", &a, &b); err != nil || a < lo || a > hi || b != end {
				return false
			}
			continue
		}
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// Faults that persist: Fetch gives up after MaxAttempts with the right typed error, and the
// writer never received a byte it should not have.
func TestFetchPersistentFaults(t *testing.T) {
	o := fastOptions()
	for _, tc := range []struct {
		name      string
		fault     fetchtest.Fault
		behavior  fetchtest.Behavior
		want      error
		wantReqs  int64 // GET requests for the Fetch
		wantBytes int   // bytes the writer may have received
	}{
		{"ignore range", fetchtest.Fault{Kind: fetchtest.IgnoreRange}, fetchtest.Behavior{}, ErrRangeIgnored, 1, 0},
		{"error page", fetchtest.Fault{Kind: fetchtest.ErrorPage}, fetchtest.Behavior{}, ErrRangeIgnored, 1, 0},
		{"wrong range", fetchtest.Fault{Kind: fetchtest.WrongRange}, fetchtest.Behavior{}, ErrBadRange, int64(o.MaxAttempts), 0},
		{"malformed Content-Range", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: "bytes 0-x/10"}, fetchtest.Behavior{}, ErrBadRange, int64(o.MaxAttempts), 0},
		{"reversed Content-Range 5-3/10", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: "bytes 5-3/10"}, fetchtest.Behavior{}, ErrBadRange, int64(o.MaxAttempts), 0},
		{"signed Content-Range +1", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: fmt.Sprintf("bytes +100-199/%d", testSize)}, fetchtest.Behavior{}, ErrBadRange, int64(o.MaxAttempts), 0},
		{"huge Content-Range", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: "bytes 100-199/99999999999999999999999"}, fetchtest.Behavior{}, ErrBadRange, int64(o.MaxAttempts), 0},
		{"unsatisfied Content-Range */10", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: "bytes */10"}, fetchtest.Behavior{}, ErrBadRange, int64(o.MaxAttempts), 0},
		{"206 without Content-Range", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: ""}, fetchtest.Behavior{}, ErrRangeIgnored, 1, 0},
		{"multipart", fetchtest.Fault{Kind: fetchtest.Multipart}, fetchtest.Behavior{}, ErrBadRange, int64(o.MaxAttempts), 0},
		{"total differs", fetchtest.Fault{Kind: fetchtest.BadContentRange, ContentRange: fmt.Sprintf("bytes 100-199/%d", testSize+1)}, fetchtest.Behavior{}, ErrChanged, 1, 0},
		{"416", fetchtest.Fault{Kind: fetchtest.Status, Code: 416}, fetchtest.Behavior{}, ErrChanged, 1, 0},
		{"404", fetchtest.Fault{Kind: fetchtest.Status, Code: 404}, fetchtest.Behavior{}, ErrGone, 1, 0},
		{"410", fetchtest.Fault{Kind: fetchtest.Status, Code: 410}, fetchtest.Behavior{}, ErrGone, 1, 0},
		{"gzip", fetchtest.Fault{}, fetchtest.Behavior{Gzip: true}, ErrEncoding, 1, 0},
		{"503 forever", fetchtest.Fault{Kind: fetchtest.Status, Code: 503}, fetchtest.Behavior{}, nil, int64(o.MaxAttempts), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := newTestServer(t)
			c := newTestClient(t, o)
			obj := mustProbe(t, c, s.URL())
			s.ResetStats()
			if tc.fault.Kind != 0 {
				s.Inject(tc.fault)
			}
			s.SetBehavior(tc.behavior)
			var buf bytes.Buffer
			err := obj.Fetch(ctxT(t), 100, 100, &buf)
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Fetch: %v; want %v", err, tc.want)
			}
			if got := int64(countMethod(s, http.MethodGet)); got != tc.wantReqs {
				t.Fatalf("server saw %d GETs, want %d (err %v)", got, tc.wantReqs, err)
			}
			if buf.Len() > tc.wantBytes {
				t.Fatalf("writer received %d bytes, want at most %d", buf.Len(), tc.wantBytes)
			}
			checkBytes(t, buf.Bytes(), p, 100)
		})
	}
}

// A 1 KB/s trickle ends each attempt at the watchdog (MinProgress per StallTimeout); each
// retry asks for the remainder; such attempts count as failures, so Fetch gives up.
func TestFetchTrickleEndsAttempts(t *testing.T) {
	s, p := newTestServer(t)
	opt := fastOptions()
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	s.ResetStats()
	s.Inject(fetchtest.Fault{Kind: fetchtest.Trickle, Arg: 1000})
	var buf bytes.Buffer
	err := o.Fetch(ctxT(t), 0, 1<<20, &buf)
	if !errors.Is(err, errStall) {
		t.Fatalf("Fetch from a trickle: %v; want the stall error", err)
	}
	checkBytes(t, buf.Bytes(), p, 0)
	ranges := s.Ranges()
	if len(ranges) != opt.MaxAttempts {
		t.Fatalf("server saw %d ranged GETs, want %d", len(ranges), opt.MaxAttempts)
	}
	if buf.Len() == 0 || int64(buf.Len()) >= opt.MinProgress*int64(opt.MaxAttempts) {
		t.Fatalf("trickle delivered %d bytes; want some, and less than MinProgress per attempt", buf.Len())
	}
	// Each retry asks for exactly the remainder: starts strictly increase (every attempt
	// delivered something) and never pass what the writer received.
	prev := int64(-1)
	for i, r := range ranges {
		var a, b int64
		if _, err := fmt.Sscanf(r, "bytes=%d-%d", &a, &b); err != nil || a <= prev || b != 1<<20-1 || a > int64(buf.Len()) {
			t.Fatalf("attempt %d asked %q after %d; want the remainder", i, r, prev)
		}
		prev = a
	}
}

func TestFetchNoRetryOn4xx(t *testing.T) {
	for _, code := range []int{400, 401, 403, 405, 409, 451, 501} {
		s, _ := newTestServer(t)
		c := newTestClient(t, fastOptions())
		o := mustProbe(t, c, s.URL())
		s.ResetStats()
		s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: code})
		err := o.Fetch(ctxT(t), 0, 10, &bytes.Buffer{})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != code {
			t.Fatalf("%d: Fetch: %v, want StatusError %d", code, err, code)
		}
		if n := s.Stats().Requests; n != 1 {
			t.Fatalf("%d: server saw %d requests, want 1", code, n)
		}
	}
}

// Retry-After is honoured (seconds and HTTP-date), capped at RetryAfterCap; without it the
// backoff is the tiny RetryBase.
func TestFetchRetryAfter(t *testing.T) {
	for i, ra := range []string{"120", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), "120"} {
		code := []int{429, 429, 503}[i]
		s, p := newTestServer(t)
		opt := fastOptions()
		opt.RetryAfterCap = 300 * time.Millisecond
		c := newTestClient(t, opt)
		o := mustProbe(t, c, s.URL())
		s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: code, RetryAfter: ra, Times: 1})
		start := time.Now()
		var buf bytes.Buffer
		if err := o.Fetch(ctxT(t), 0, 1000, &buf); err != nil {
			t.Fatalf("%d Retry-After %q: %v", code, ra, err)
		}
		checkBytes(t, buf.Bytes(), p, 0)
		// The wait must be the capped Retry-After, not the 1 ms backoff (nor 120 s / 1 h).
		if d := time.Since(start); d < opt.RetryAfterCap-20*time.Millisecond {
			t.Fatalf("Retry-After %q: retried after %v, before the capped %v", ra, d, opt.RetryAfterCap)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	limit := time.Minute
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"3", 3 * time.Second},
		{" 7 ", 7 * time.Second},
		{"61", time.Minute},
		{"99999999999999999999", 0}, // unparseable as int64 or date
		{"9223372036854775807", time.Minute},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second},
		{now.Add(-10 * time.Second).Format(http.TimeFormat), 0},
		{now.Add(time.Hour).Format(http.TimeFormat), time.Minute},
		{"tomorrow", 0},
	} {
		if got := parseRetryAfter(tc.in, now, limit); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	base, cap := 10*time.Millisecond, 300*time.Millisecond
	for k := 1; k <= 12; k++ {
		hi := min(cap, base<<(k-1))
		for range 50 {
			if d := backoff(base, cap, k); d < 0 || d >= hi {
				t.Fatalf("backoff(%d) = %v outside [0, %v)", k, d, hi)
			}
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&StatusError{Code: 408}, true},
		{&StatusError{Code: 429}, true},
		{&StatusError{Code: 500}, true},
		{&StatusError{Code: 503}, true},
		{&StatusError{Code: 599}, true},
		{&StatusError{Code: 501}, false},
		{&StatusError{Code: 400}, false},
		{&StatusError{Code: 403}, false},
		{&StatusError{Code: 404}, false},
		{fmt.Errorf("x: %w", ErrBadRange), true},
		{fmt.Errorf("x: %w", ErrChanged), false},
		{fmt.Errorf("x: %w", ErrGone), false},
		{fmt.Errorf("x: %w", ErrRangeIgnored), false},
		{fmt.Errorf("x: %w", ErrEncoding), false},
		{fmt.Errorf("x: %w", ErrRedirect), false},
		{errStall, true},
		{fmt.Errorf("%w: 1 of 2", errShortBody), true},
		{&WriteError{Err: errors.New("disk full")}, false},
		{context.Canceled, false},
		{errors.New("read tcp: connection reset by peer"), true},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// A body longer than promised: exactly the asked bytes are written, and the connection is
// not reused (its framing cannot be trusted).
func TestFetchLongBody(t *testing.T) {
	s, p := newTestServer(t)
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	// Baseline: sequential fetches share one kept-alive connection.
	for i := range 2 {
		if err := o.Fetch(ctxT(t), int64(i)*1000, 1000, &bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Stats().Connections; n != 1 {
		t.Fatalf("baseline used %d connections, want 1", n)
	}
	s.Inject(fetchtest.Fault{Kind: fetchtest.LongBody, Arg: 50000, Times: 1})
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 5000, 70000, &buf); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if buf.Len() != 70000 {
		t.Fatalf("wrote %d bytes, want 70000", buf.Len())
	}
	checkBytes(t, buf.Bytes(), p, 5000)
	if err := o.Fetch(ctxT(t), 0, 1000, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Connections; n != 2 {
		t.Fatalf("after a long body: %d connections in total, want 2 (the long one dropped)", n)
	}
}

// A content swap between a broken attempt and its retry: ErrChanged, and the writer holds
// only bytes of the old version. Whether the server honours If-Range (200 with the new
// validator) or ignores it (206 of the new version), and whatever validators it sends.
func TestFetchContentSwap(t *testing.T) {
	for _, tc := range []struct {
		name    string
		b       fetchtest.Behavior
		newSize int64 // size of the new version; 0 = same size
	}{
		{"strong ETag", fetchtest.Behavior{}, 0},
		{"strong ETag, If-Range ignored", fetchtest.Behavior{IgnoreIfRange: true}, 0},
		{"weak ETag", fetchtest.Behavior{ETag: fetchtest.ETagWeak}, 0},
		{"weak ETag, If-Range ignored", fetchtest.Behavior{ETag: fetchtest.ETagWeak, IgnoreIfRange: true}, 0},
		{"Last-Modified only", fetchtest.Behavior{ETag: fetchtest.ETagNone}, 0},
		{"Last-Modified only, If-Range ignored", fetchtest.Behavior{ETag: fetchtest.ETagNone, IgnoreIfRange: true}, 0},
		// No validator at all: only the size can tell (a same-size swap cannot be detected).
		{"no validators, new size", fetchtest.Behavior{ETag: fetchtest.ETagNone, NoLastModified: true}, testSize + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newSize := cmp.Or(tc.newSize, testSize)
			s, p := newTestServer(t, fetchtest.WithBehavior(tc.b))
			c := newTestClient(t, fastOptions())
			o := mustProbe(t, c, s.URL())
			s.ResetStats()
			s.Inject(fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: 100000, Times: 1, After: func() {
				s.SetContent(fetchtest.DefaultPath, fetchtest.Pattern(newSize, 8), newSize)
			}})
			var buf bytes.Buffer
			err := o.Fetch(ctxT(t), 0, 1<<20, &buf)
			if !errors.Is(err, ErrChanged) || !isRemoteChanged(err) {
				t.Fatalf("Fetch across a swap: %v; want ErrChanged", err)
			}
			if buf.Len() != 100000 {
				t.Fatalf("writer got %d bytes, want the 100000 of the first attempt", buf.Len())
			}
			checkBytes(t, buf.Bytes(), p, 0)
			if n := s.Stats().Requests; n != 2 {
				t.Fatalf("server saw %d requests, want 2 (ErrChanged is final)", n)
			}
			// A new Probe pins the new version and reads it.
			o2 := mustProbe(t, c, s.URL())
			var buf2 bytes.Buffer
			if err := o2.Fetch(ctxT(t), 0, 1000, &buf2); err != nil {
				t.Fatalf("Fetch of the new version: %v", err)
			}
			checkBytes(t, buf2.Bytes(), fetchtest.Pattern(newSize, 8), 0)
			if o2.Size != newSize {
				t.Fatalf("new Probe: size %d, want %d", o2.Size, newSize)
			}
		})
	}
}

func isRemoteChanged(err error) bool {
	var rc interface{ RemoteChanged() bool }
	return errors.As(err, &rc) && rc.RemoteChanged()
}

type failingWriter struct {
	n   int
	err error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		return 0, w.err
	}
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

func TestFetchWriteErrorIsFinal(t *testing.T) {
	s, _ := newTestServer(t)
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	s.ResetStats()
	diskFull := errors.New("no space left on device")
	err := o.Fetch(ctxT(t), 0, 1<<20, &failingWriter{n: 1000, err: diskFull})
	var we *WriteError
	if !errors.Is(err, diskFull) || !errors.As(err, &we) {
		t.Fatalf("Fetch: %v; want a WriteError wrapping the writer's error", err)
	}
	if n := s.Stats().Requests; n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
}

func TestFetchHonoursContext(t *testing.T) {
	s, _ := newTestServer(t)
	opt := fastOptions()
	opt.ResponseHeaderTimeout = time.Minute
	opt.StallTimeout = time.Minute
	opt.RetryAfterCap = time.Minute
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	for _, f := range []fetchtest.Fault{
		{Kind: fetchtest.BlackHole},
		{Kind: fetchtest.Stall, Arg: 1000},
		{Kind: fetchtest.Status, Code: 503, RetryAfter: "50"},
	} {
		s.ClearFaults()
		s.Inject(f)
		ctx, cancel := context.WithTimeout(ctxT(t), 100*time.Millisecond)
		start := time.Now()
		err := o.Fetch(ctx, 0, 1<<20, &bytes.Buffer{})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%v: Fetch: %v; want context.DeadlineExceeded", f.Kind, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("%v: Fetch returned %v after its context ended", f.Kind, d)
		}
	}
}

// The transport never opens more than Connections connections to a host, whatever the
// number of concurrent Fetches.
func TestFetchConnectionLimit(t *testing.T) {
	s, p := newTestServer(t)
	opt := withoutWatchdogs(fastOptions()) // no fault: a retry would open a connection
	opt.Connections = 2
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	s.ResetStats()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			var buf bytes.Buffer
			off := int64(i) * 300000
			if err := o.Fetch(ctxT(t), off, 300000, &buf); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(buf.Bytes(), p.Bytes(off, 300000)) {
				errs <- fmt.Errorf("wrong bytes at %d", off)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := s.Stats(); st.MaxConcurrent > 2 || st.Connections > 2 {
		t.Fatalf("server saw %d concurrent requests on %d connections, want at most 2", st.MaxConcurrent, st.Connections)
	}
}

func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(1 << 20) // burst 128 KiB
	if d := b.take(128 << 10); d != 0 {
		t.Fatalf("taking the burst waited %v", d)
	}
	// The next MiB is debt: about one second.
	d := b.take(1 << 20)
	if d < 900*time.Millisecond || d > 1100*time.Millisecond {
		t.Fatalf("taking 1 MiB at 1 MiB/s: wait %v, want about 1s", d)
	}
	if b.chunk() != 128<<10 {
		t.Fatalf("chunk = %d, want the burst", b.chunk())
	}
	if small := newTokenBucket(100); small.chunk() != 4<<10 {
		t.Fatalf("chunk at 100 B/s = %d, want the 4 KiB floor", small.chunk())
	}
}

// The client-wide limit holds across concurrent fetches (a lower bound on elapsed time is
// the limiter's correctness, not a speed claim).
func TestFetchRateLimit(t *testing.T) {
	s, p := newTestServer(t)
	opt := fastOptions()
	opt.RateLimit = 4 << 20
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			var buf bytes.Buffer
			if err := o.Fetch(ctxT(t), int64(i)<<20, 1<<20, &buf); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(buf.Bytes(), p.Bytes(int64(i)<<20, 1<<20)) {
				t.Error("wrong bytes")
			}
		})
	}
	wg.Wait()
	// 2 MiB at 4 MiB/s with a 512 KiB burst: at least 1.5 MiB / 4 MiB/s.
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Fatalf("2 MiB at 4 MiB/s took only %v", d)
	}
}

func TestStream(t *testing.T) {
	s, p := newTestServer(t)
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	var buf bytes.Buffer
	if err := o.Stream(ctxT(t), &buf); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, buf.Bytes(), p, 0)
	if int64(buf.Len()) != p.Size() {
		t.Fatalf("Stream wrote %d bytes, want %d", buf.Len(), p.Size())
	}

	// An error page instead of the file: refused before a byte is written.
	s.Inject(fetchtest.Fault{Kind: fetchtest.ErrorPage, Times: 1})
	buf.Reset()
	if err := o.Stream(ctxT(t), &buf); err == nil || buf.Len() != 0 {
		t.Fatalf("Stream of an error page: %v, %d bytes written", err, buf.Len())
	}
	// A 503 before anything is written is retried.
	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 503, Times: 1})
	buf.Reset()
	if err := o.Stream(ctxT(t), &buf); err != nil || int64(buf.Len()) != p.Size() {
		t.Fatalf("Stream after a 503: %v, %d bytes", err, buf.Len())
	}
	// A break after bytes were written cannot be resumed.
	s.Inject(fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: 1000, Times: 1})
	buf.Reset()
	if err := o.Stream(ctxT(t), &buf); err == nil {
		t.Fatal("Stream across a short body succeeded")
	}
	checkBytes(t, buf.Bytes(), p, 0)
	// A new version: ErrChanged.
	s.SetContent(fetchtest.DefaultPath, fetchtest.Pattern(testSize, 9), testSize)
	buf.Reset()
	if err := o.Stream(ctxT(t), &buf); !errors.Is(err, ErrChanged) || buf.Len() != 0 {
		t.Fatalf("Stream of a new version: %v, %d bytes", err, buf.Len())
	}
}

// A server that accepts and never speaks (plain: no response header; TLS: no handshake):
// each attempt ends at its timeout, attempts are bounded, and the error says timeout.
func TestBlackHoleServer(t *testing.T) {
	bh := fetchtest.NewSilentServer()
	t.Cleanup(bh.Close)
	opt := fastOptions()
	opt.TLSHandshakeTimeout = 200 * time.Millisecond
	opt.ResponseHeaderTimeout = 200 * time.Millisecond
	opt.MaxAttempts = 2
	c := newTestClient(t, opt)
	for _, scheme := range []string{"http", "https"} {
		start := time.Now()
		_, err := c.Probe(ctxT(t), bh.URL(scheme, "/x"))
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("%s black hole: %v; want a timeout", scheme, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("%s black hole took %v", scheme, d)
		}
	}
	// HEAD + 2 GET attempts per scheme, each on a fresh connection.
	if n := bh.Accepted(); n != 6 {
		t.Fatalf("black hole accepted %d connections, want 6", n)
	}
}

// Deleted remotely mid-session: a 404 or 410 to Fetch is final, matches ErrGone, and
// reports RemoteChanged() true, so cache/ marks the handle stale (it is bound to a version
// that no longer exists) instead of serving or retrying. A 404 to Probe is ErrGone but not
// a change: nothing was pinned yet.
func TestFetchDeletedRemotely(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delete func(s *fetchtest.Server)
		code   int
	}{
		{"404", func(s *fetchtest.Server) { s.Remove(fetchtest.DefaultPath) }, http.StatusNotFound},
		{"410", func(s *fetchtest.Server) { s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: http.StatusGone}) }, http.StatusGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := newTestServer(t)
			c := newTestClient(t, fastOptions())
			o := mustProbe(t, c, s.URL())
			var buf bytes.Buffer
			if err := o.Fetch(ctxT(t), 0, 1000, &buf); err != nil {
				t.Fatal(err)
			}
			checkBytes(t, buf.Bytes(), p, 0)
			tc.delete(s)
			s.ResetStats()
			buf.Reset()
			err := o.Fetch(ctxT(t), 1000, 1000, &buf)
			var se *StatusError
			if !errors.Is(err, ErrGone) || !isRemoteChanged(err) || !errors.As(err, &se) || se.Code != tc.code {
				t.Fatalf("Fetch after deletion: %v (gone %v, remote changed %v); want StatusError %d, both true",
					err, errors.Is(err, ErrGone), isRemoteChanged(err), tc.code)
			}
			if errors.Is(err, ErrChanged) {
				t.Fatalf("Fetch after deletion matches ErrChanged too: %v (one sentinel per error)", err)
			}
			if buf.Len() != 0 || s.Stats().Requests != 1 {
				t.Fatalf("after deletion: %d bytes written, %d requests; want 0 and 1 (final)", buf.Len(), s.Stats().Requests)
			}
			// Stream is bound to the pinned version too.
			if err := o.Stream(ctxT(t), &buf); !errors.Is(err, ErrGone) || !isRemoteChanged(err) {
				t.Fatalf("Stream after deletion: %v; want gone and remote changed", err)
			}
			// A new open fails clearly, and is not a "change" of anything pinned.
			_, err = c.Probe(ctxT(t), s.URL())
			if !errors.Is(err, ErrGone) || isRemoteChanged(err) {
				t.Fatalf("Probe after deletion: %v; want ErrGone without RemoteChanged", err)
			}
		})
	}
}

// A presigned URL that expires mid-session answers 403: a final StatusError (not retried,
// not a remote change, so the cache is kept) whose message says the URL may have expired,
// without the signature. A fresh URL for the same object has the same IdentityNoQuery and
// pins the same version, so the cached data stays valid.
func TestPresignedURLExpired(t *testing.T) {
	s, p := newTestServer(t)
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL()+"?X-Amz-Expires=60&X-Amz-Signature=0ld5ig")
	if err := o.Fetch(ctxT(t), 0, 1000, io.Discard); err != nil {
		t.Fatal(err)
	}
	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: http.StatusForbidden})
	s.ResetStats()
	var buf bytes.Buffer
	err := o.Fetch(ctxT(t), 1000, 1000, &buf)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("Fetch with an expired URL: %v; want StatusError 403", err)
	}
	if n := s.Stats().Requests; n != 1 || buf.Len() != 0 {
		t.Fatalf("expired URL: %d requests, %d bytes written; want 1 (not retried) and 0", n, buf.Len())
	}
	if isRemoteChanged(err) || errors.Is(err, ErrGone) || errors.Is(err, ErrChanged) {
		t.Fatalf("an expired URL taken for a remote change: %v", err)
	}
	msg := err.Error()
	want := "HTTP 403 Forbidden from " + s.URL() + "?X-Amz-Expires=REDACTED&X-Amz-Signature=REDACTED (the URL may have expired"
	if !strings.HasPrefix(msg, want) || !strings.Contains(msg, "fresh") || strings.Contains(msg, "0ld5ig") {
		t.Fatalf("message %q; want it to start %q, ask for a fresh URL, and hold no signature", msg, want)
	}

	s.ClearFaults()
	fresh := mustProbe(t, c, s.URL()+"?X-Amz-Expires=60&X-Amz-Signature=n3w5ig")
	if fresh.IdentityNoQuery() != o.IdentityNoQuery() || fresh.Size != o.Size || fresh.ETag != o.ETag ||
		fresh.LastModified != o.LastModified {
		t.Fatalf("fresh URL pins %q %d %q %q; old %q %d %q %q", fresh.IdentityNoQuery(), fresh.Size, fresh.ETag,
			fresh.LastModified, o.IdentityNoQuery(), o.Size, o.ETag, o.LastModified)
	}
	buf.Reset()
	if err := fresh.Fetch(ctxT(t), 1000, 1000, &buf); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, buf.Bytes(), p, 1000)
}

// 401 also says what to check; other codes carry no hint.
func TestStatusErrorMessages(t *testing.T) {
	for code, want := range map[int]string{
		401: "HTTP 401 Unauthorized from https://h/p?sig=REDACTED (credentials missing or refused",
		403: "HTTP 403 Forbidden from https://h/p?sig=REDACTED (the URL may have expired or be unauthorised",
		404: "HTTP 404 Not Found from https://h/p?sig=REDACTED",
		500: "HTTP 500 Internal Server Error from https://h/p?sig=REDACTED",
	} {
		msg := (&StatusError{Code: code, URL: Redact("https://u:pw@h/p?sig=abc")}).Error()
		if !strings.HasPrefix(msg, want) || (code >= 404 && msg != want) {
			t.Errorf("StatusError %d: %q; want %q", code, msg, want)
		}
	}
}
