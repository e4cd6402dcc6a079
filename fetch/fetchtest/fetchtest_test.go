package fetchtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/fetch/fetchtest/testsync"
)

func newServer(t *testing.T, size int64, opts ...Option) (*Server, *PatternReader) {
	t.Helper()
	p := Pattern(size, 5)
	s := NewServer(p, size, opts...)
	t.Cleanup(s.Close)
	return s, p
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// A fresh transport per request: faults break connections on purpose.
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestServerNormalAnswers(t *testing.T) {
	s, p := newServer(t, 100000)
	resp, body, err := get(t, s.URL(), map[string]string{"Range": "bytes=10-19"})
	if err != nil || resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 10-19/100000" ||
		!bytes.Equal(body, p.Bytes(10, 10)) || resp.Header.Get("Etag") != `"v1-100000"` || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("range answer: %v %v %q", err, resp, body)
	}
	resp, body, err = get(t, s.URL(), nil)
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, p.Bytes(0, 100000)) {
		t.Fatalf("full answer: %v %v", err, resp)
	}
	// The client can hold the whole body before the handler has returned and
	// counted it.
	testsync.WaitFor(t, 5*time.Second, "no request in flight", func() bool { return s.Stats().InFlight == 0 })
	if st := s.Stats(); st.Requests != 2 || st.RangeRequests != 1 || st.BytesSent != 100010 || st.Connections != 2 {
		t.Fatalf("stats = %+v", st)
	}
	if rc := s.RangeCounts(); rc["bytes=10-19"] != 1 || len(rc) != 1 {
		t.Fatalf("RangeCounts = %v", rc)
	}
	// Content swap: new ETag, new bytes. Remove: 404.
	s.SetContent(DefaultPath, Pattern(100000, 6), 100000)
	resp, body, _ = get(t, s.URL(), map[string]string{"Range": "bytes=0-9"})
	if resp.Header.Get("Etag") != `"v2-100000"` || !bytes.Equal(body, Pattern(100000, 6).Bytes(0, 10)) {
		t.Fatalf("after SetContent: %v %x", resp.Header, body)
	}
	s.Remove(DefaultPath)
	if resp, _, _ = get(t, s.URL(), nil); resp.StatusCode != 404 {
		t.Fatalf("after Remove: %d", resp.StatusCode)
	}
}

func TestServerFaults(t *testing.T) {
	const size = 200000
	for _, tc := range []struct {
		name  string
		fault Fault
		check func(t *testing.T, resp *http.Response, body []byte, err error)
	}{
		{"IgnoreRange", Fault{Kind: IgnoreRange}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 200 || len(body) != size {
				t.Fatalf("%v %v %d", err, resp, len(body))
			}
		}},
		{"ErrorPage", Fault{Kind: ErrorPage}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !bytes.Contains(body, []byte("<html>")) {
				t.Fatalf("%v %v %q", err, resp, body)
			}
		}},
		{"WrongRange", Fault{Kind: WrongRange, Arg: 5}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 105-204/200000" {
				t.Fatalf("%v %v", err, resp)
			}
		}},
		{"BadContentRange", Fault{Kind: BadContentRange, ContentRange: "bytes 5-3/10"}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 5-3/10" {
				t.Fatalf("%v %v", err, resp)
			}
		}},
		{"Multipart", Fault{Kind: Multipart}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") {
				t.Fatalf("%v %v", err, resp)
			}
		}},
		{"ShortBody", Fault{Kind: ShortBody, Arg: 30}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 30 || resp.ContentLength != 100 {
				t.Fatalf("%v %d", err, len(body))
			}
		}},
		{"Reset", Fault{Kind: Reset, Arg: 30}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, syscall.ECONNRESET) || len(body) > 30 {
				t.Fatalf("%v %d", err, len(body))
			}
		}},
		{"LongBody", Fault{Kind: LongBody, Arg: 7}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.ContentLength != -1 || len(body) != 107 || resp.Header.Get("Content-Range") != "bytes 100-199/200000" {
				t.Fatalf("%v %v %d", err, resp, len(body))
			}
		}},
		{"Status", Fault{Kind: Status, Code: 429, RetryAfter: "7"}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
				t.Fatalf("%v %v", err, resp)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newServer(t, size)
			f := tc.fault
			f.Times = 1
			s.Inject(f)
			resp, body, err := get(t, s.URL(), map[string]string{"Range": "bytes=100-199"})
			tc.check(t, resp, body, err)
			// Times: 1 — the next request is normal.
			resp, body, err = get(t, s.URL(), map[string]string{"Range": "bytes=100-199"})
			if err != nil || resp.StatusCode != 206 || len(body) != 100 {
				t.Fatalf("second request after a one-time fault: %v %v %d", err, resp, len(body))
			}
		})
	}
}

// Stall, black hole and trickle hold the client; a client timeout ends them, and Close
// unblocks them.
func TestServerSlowFaults(t *testing.T) {
	for _, f := range []Fault{{Kind: Stall, Arg: 10}, {Kind: BlackHole}, {Kind: Trickle, Arg: 100}} {
		s, _ := newServer(t, 100000)
		s.Inject(f)
		tr := &http.Transport{}
		c := &http.Client{Transport: tr, Timeout: 300 * time.Millisecond}
		start := time.Now()
		resp, err := c.Get(s.URL())
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatalf("%v: the request completed", f.Kind)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%v: client timeout took %v", f.Kind, d)
		}
		tr.CloseIdleConnections()
		// One more request hangs until Close.
		go func() {
			if resp, err := http.Get(s.URL()); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		testsync.WaitFor(t, 5*time.Second, "a second request in flight", func() bool { st := s.Stats(); return st.Requests >= 2 && st.InFlight > 0 })
		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%v: Close did not return with a request in flight", f.Kind)
		}
	}
}

func TestServerBehavior(t *testing.T) {
	s, p := newServer(t, 5000)
	s.SetBehavior(Behavior{HeadStatus: 405, ETag: ETagWeak, ContentDisposition: `attachment; filename="x.bin"`})
	resp, err := http.Head(s.URL())
	if err != nil || resp.StatusCode != 405 {
		t.Fatalf("HEAD: %v %v", err, resp)
	}
	r, _, _ := get(t, s.URL(), nil)
	if r.Header.Get("Etag") != `W/"v1-5000"` || r.Header.Get("Content-Disposition") == "" {
		t.Fatalf("headers %v", r.Header)
	}
	s.SetBehavior(Behavior{ETag: ETagNone, NoContentLength: true, NoAcceptRanges: true})
	r, body, err := get(t, s.URL(), map[string]string{"Range": "bytes=0-99"})
	if err != nil || r.Header.Get("Etag") != "" || r.ContentLength != -1 || r.Header.Get("Accept-Ranges") != "" ||
		r.Header.Get("Last-Modified") == "" || !bytes.Equal(body, p.Bytes(0, 100)) {
		t.Fatalf("%v %v", err, r)
	}
	s.SetBehavior(Behavior{Gzip: true})
	r, body, err = get(t, s.URL(), map[string]string{"Range": "bytes=0-99"})
	if err != nil || r.Header.Get("Content-Encoding") != "gzip" || r.StatusCode != 206 {
		t.Fatalf("%v %v", err, r)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := io.ReadAll(zr); err != nil || !bytes.Equal(plain, p.Bytes(0, 100)) {
		t.Fatalf("gzip body: %v", err)
	}
	// If-Range: honoured (stale validator -> 200) unless IgnoreIfRange.
	s.SetBehavior(Behavior{})
	r, _, _ = get(t, s.URL(), map[string]string{"Range": "bytes=0-9", "If-Range": `"stale"`})
	if r.StatusCode != 200 {
		t.Fatalf("stale If-Range answered %d", r.StatusCode)
	}
	s.SetBehavior(Behavior{IgnoreIfRange: true})
	r, _, _ = get(t, s.URL(), map[string]string{"Range": "bytes=0-9", "If-Range": `"stale"`})
	if r.StatusCode != 206 {
		t.Fatalf("ignored If-Range answered %d", r.StatusCode)
	}
	// Redirects, same and cross host.
	s.Redirect("/a", s.URLWithHost("localhost", DefaultPath), http.StatusFound)
	r, _, _ = get(t, s.URLFor("/a"), nil)
	if r.StatusCode != 302 || !strings.HasPrefix(r.Header.Get("Location"), "http://localhost:") {
		t.Fatalf("redirect: %v", r)
	}
}

// A per-connection cap paces each connection (lower bound on time is the cap's correctness).
func TestServerConnRate(t *testing.T) {
	s, p := newServer(t, 64<<10, WithConnRate(256<<10))
	start := time.Now()
	_, body, err := get(t, s.URL(), nil)
	if err != nil || !bytes.Equal(body, p.Bytes(0, 64<<10)) {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("64 KiB at 256 KiB/s took %v", d)
	}
	s.SetConnRate(0)
	if _, body, err = get(t, s.URL(), nil); err != nil || len(body) != 64<<10 {
		t.Fatal(err)
	}
}

func TestServerMaxConcurrent(t *testing.T) {
	s, _ := newServer(t, 1000)
	s.Inject(Fault{Kind: Stall, Arg: 0, Times: 3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	for range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL(), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	testsync.WaitFor(t, 5*time.Second, "3 requests in flight", func() bool { return s.Stats().InFlight == 3 })
	cancel()
	for range 3 {
		<-done
	}
	testsync.WaitFor(t, 5*time.Second, "no request in flight", func() bool { return s.Stats().InFlight == 0 })
	if st := s.Stats(); st.MaxConcurrent != 3 || st.Requests != 3 {
		t.Fatalf("stats %+v; want 3 requests, 3 concurrent", st)
	}
}

func TestServerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.bin")
	want := Pattern(12345, 3).Bytes(0, 12345)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := NewServer(f, 12345, WithPath("/data.bin"))
	defer s.Close()
	_, body, err := get(t, s.URLFor("/data.bin"), map[string]string{"Range": "bytes=12000-12344"})
	if err != nil || !bytes.Equal(body, want[12000:]) {
		t.Fatalf("%v %d", err, len(body))
	}
	if s.URL() != s.URLFor("/data.bin") {
		t.Fatal(fmt.Sprint("URL ", s.URL()))
	}
}

// Status and ErrorPage bodies of a chosen size (with Content-Length) or without end
// (chunked); an endless body stops once the client leaves.
func TestServerErrorBodySizes(t *testing.T) {
	s, _ := newServer(t, 1000)
	s.Inject(Fault{Kind: Status, Code: 500, Arg: 100000, Times: 1})
	resp, body, err := get(t, s.URL(), nil)
	if err != nil || resp.StatusCode != 500 || resp.ContentLength != 100000 || len(body) != 100000 ||
		!bytes.HasPrefix(body, []byte("500 Internal Server Error")) {
		t.Fatalf("sized Status body: %v %v %d", err, resp, len(body))
	}
	s.Inject(Fault{Kind: ErrorPage, Arg: 5000, Times: 1})
	resp, body, err = get(t, s.URL(), nil)
	if err != nil || resp.StatusCode != 200 || len(body) != 5000 || !bytes.HasPrefix(body, []byte(errorPage)) {
		t.Fatalf("sized ErrorPage: %v %v %d", err, resp, len(body))
	}

	for _, f := range []Fault{{Kind: Status, Code: 404, Arg: EndlessBody}, {Kind: ErrorPage, Arg: EndlessBody}} {
		s.ResetStats()
		s.Inject(Fault{Kind: f.Kind, Code: f.Code, Arg: f.Arg, Times: 1})
		tr := &http.Transport{}
		resp, err := (&http.Client{Transport: tr}).Get(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != -1 {
			t.Fatalf("%v endless: Content-Length %d, want none", f.Kind, resp.ContentLength)
		}
		// Far more than any buffer, and then some: the body has not ended.
		n, err := io.CopyN(io.Discard, resp.Body, 8<<20)
		if n != 8<<20 || err != nil {
			t.Fatalf("%v endless: read %d, %v", f.Kind, n, err)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
		testsync.WaitFor(t, 5*time.Second, "no request in flight", func() bool { return s.Stats().InFlight == 0 })
	}
}

// A frozen connection moves no byte: a request on it gets no answer; a new connection is
// served; Close returns although the frozen side never sees the client leave.
func TestServerFreezeConnections(t *testing.T) {
	s, p := newServer(t, 1000)
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 300 * time.Millisecond}
	resp, err := c.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := s.FreezeConnections(); n != 1 {
		t.Fatalf("froze %d connections, want the 1 kept alive", n)
	}
	if resp, err := c.Get(s.URL()); err == nil {
		resp.Body.Close()
		t.Fatal("a request on a frozen connection got an answer")
	}
	if st := s.Stats(); st.Requests != 1 {
		t.Fatalf("server saw %d requests, want 1 (the frozen connection drops what it receives)", st.Requests)
	}
	tr.CloseIdleConnections()
	_, body, err := get(t, s.URL(), nil)
	if err != nil || !bytes.Equal(body, p.Bytes(0, 1000)) {
		t.Fatalf("new connection after a freeze: %v", err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a frozen connection")
	}
}

// The relay forwards whole responses, counts dials, and a frozen connection moves nothing
// (the request times out) while a new one through the same relay works.
func TestRelayFreeze(t *testing.T) {
	const size = 100000
	s := NewServer(Pattern(size, 3), size)
	defer s.Close()
	r := NewRelay(s.Addr())
	defer r.Close()
	url := "http://" + r.Addr() + DefaultPath
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 300 * time.Millisecond}
	get := func() ([]byte, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	b, err := get()
	if err != nil || !bytes.Equal(b, Pattern(size, 3).Bytes(0, size)) {
		t.Fatalf("GET through the relay: %d bytes, %v", len(b), err)
	}
	if n := r.Freeze(); n != 1 {
		t.Fatalf("froze %d connections, want the 1 kept alive", n)
	}
	if _, err := get(); err == nil {
		t.Fatal("GET on a frozen kept-alive connection succeeded")
	}
	if b, err := get(); err != nil || len(b) != size {
		t.Fatalf("GET on a new connection after the freeze: %d bytes, %v", len(b), err)
	}
	if n := r.Accepted(); n != 2 {
		t.Fatalf("relay accepted %d connections, want 2", n)
	}
}
