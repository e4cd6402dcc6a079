package fetch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// countingDialer dials for real (loopback only) and counts the bytes the client reads on
// each connection: how much of a hostile answer was actually consumed.
type countingDialer struct {
	mu    sync.Mutex
	conns []*countingConn
}

type countingConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		return nil, fmt.Errorf("countingDialer: refusing non-loopback %s", addr)
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c}
	d.mu.Lock()
	d.conns = append(d.conns, cc)
	d.mu.Unlock()
	return cc, nil
}

// stats returns the number of connections and the most bytes read on any one of them.
func (d *countingDialer) stats() (conns int, maxRead int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		maxRead = max(maxRead, c.read.Load())
	}
	return len(d.conns), maxRead
}

// readBound is the most a client may read of an answer it does not want: the response
// header, the transport's 64 KiB read buffer and discardSmall's few KiB, with slack. The
// hostile answers below are gigabytes or endless.
const readBound = 256 << 10

// An error answer with a huge or endless body — 4xx, 5xx, 416, or a 200 error page to a
// Range request — is never read beyond a small bound, whether it declares its length or
// not, and whether the error is final or retried.
func TestHugeErrorBodyIsNotRead(t *testing.T) {
	const huge = 5 << 30 // declared, never sent in full
	for _, tc := range []struct {
		name  string
		fault fetchtest.Fault
		want  error // nil: a retried StatusError
		code  int
	}{
		{"404 with 5 GiB body", fetchtest.Fault{Kind: fetchtest.Status, Code: 404, Arg: huge}, ErrGone, 404},
		{"404 endless", fetchtest.Fault{Kind: fetchtest.Status, Code: 404, Arg: fetchtest.EndlessBody}, ErrGone, 404},
		{"403 endless", fetchtest.Fault{Kind: fetchtest.Status, Code: 403, Arg: fetchtest.EndlessBody}, nil, 403},
		{"500 endless, retried", fetchtest.Fault{Kind: fetchtest.Status, Code: 500, Arg: fetchtest.EndlessBody}, nil, 500},
		{"503 with 5 GiB body, retried", fetchtest.Fault{Kind: fetchtest.Status, Code: 503, Arg: huge, RetryAfter: "0"}, nil, 503},
		{"416 endless", fetchtest.Fault{Kind: fetchtest.Status, Code: 416, Arg: fetchtest.EndlessBody}, ErrChanged, 0},
		{"200 error page, 5 GiB", fetchtest.Fault{Kind: fetchtest.ErrorPage, Arg: huge}, ErrRangeIgnored, 0},
		{"200 error page, endless", fetchtest.Fault{Kind: fetchtest.ErrorPage, Arg: fetchtest.EndlessBody}, ErrRangeIgnored, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t)
			d := &countingDialer{}
			opt := fastOptions()
			opt.DialContext = d.dial
			c := newTestClient(t, opt)
			o := mustProbe(t, c, s.URL())
			s.ResetStats()
			s.Inject(tc.fault)
			var buf bytes.Buffer
			err := o.Fetch(ctxT(t), 100, 100, &buf)
			var se *StatusError
			switch {
			case err == nil:
				t.Fatal("Fetch succeeded")
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Fetch: %v; want %v", err, tc.want)
			case tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code):
				t.Fatalf("Fetch: %v; want HTTP %d", err, tc.code)
			case buf.Len() != 0:
				t.Fatalf("the writer received %d bytes of an error answer", buf.Len())
			}
			conns, maxRead := d.stats()
			reqs := s.Stats().Requests
			if maxRead > readBound || int64(conns) > reqs+1 {
				t.Fatalf("%d requests on %d connections read up to %d bytes on one; want at most %d",
					reqs, conns, maxRead, readBound)
			}
			t.Logf("%d requests, %d connections, at most %d bytes read on one: %v", reqs, conns, maxRead, err)
		})
	}

	// Probe: the GET probe's answer is an endless 403 after a refused HEAD.
	s, _ := newTestServer(t)
	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 403, Arg: fetchtest.EndlessBody})
	d := &countingDialer{}
	opt := fastOptions()
	opt.ResponseHeaderTimeout = shortHeaderTimeout // the HEAD's header never comes
	opt.DialContext = d.dial
	c := newTestClient(t, opt)
	_, err := c.Probe(ctxT(t), s.URL())
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 403 {
		t.Fatalf("Probe: %v; want HTTP 403", err)
	}
	if _, maxRead := d.stats(); maxRead > readBound {
		t.Fatalf("Probe read %d bytes of an endless 403 on one connection", maxRead)
	}
}

// rawServer is a 127.0.0.1 listener that hands each connection to serve, for answers
// net/http's server will not produce (endless headers, impossible lengths). Cleanup closes
// the listener and every connection and waits for the serve goroutines.
type rawServer struct {
	l     net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newRawServer(t *testing.T, serve func(c net.Conn, done <-chan struct{})) *rawServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{l: l, done: make(chan struct{})}
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() { defer c.Close(); serve(c, s.done) })
		}
	})
	t.Cleanup(func() {
		close(s.done)
		l.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.l.Addr().String() + "/file" }

// endlessHeader answers every request with a header block that never ends: 1000-byte
// header lines, each after pause, until the client leaves, 1 GiB was sent, or the test ends.
func endlessHeader(pause time.Duration) func(net.Conn, <-chan struct{}) {
	return func(c net.Conn, done <-chan struct{}) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"); err != nil {
			return
		}
		line := []byte("X-Filler: " + strings.Repeat("x", 988) + "\r\n")
		for sent := 0; sent < 1<<30; sent += len(line) {
			if pause > 0 {
				select {
				case <-done:
					return
				case <-time.After(pause):
				}
			}
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	}
}

// A 1 GB response header is refused once it passes maxHeaderBytes, without a retry and
// without reading much more; one that arrives slowly ends at ResponseHeaderTimeout.
func TestEndlessResponseHeader(t *testing.T) {
	fast := newRawServer(t, endlessHeader(0))
	d := &countingDialer{}
	opt := fastOptions()
	opt.DialContext = d.dial
	c := newTestClient(t, opt)
	_, err := c.Probe(ctxT(t), fast.url())
	if err == nil || !strings.Contains(err.Error(), "headers exceeded") {
		t.Fatalf("Probe of an endless header: %v; want the header limit error", err)
	}
	conns, maxRead := d.stats()
	if conns != 1 || maxRead > maxHeaderBytes+readBound {
		t.Fatalf("endless header: %d connections, up to %d bytes read; want 1 and at most %d",
			conns, maxRead, maxHeaderBytes+readBound)
	}

	slow := newRawServer(t, endlessHeader(10*time.Millisecond))
	opt = fastOptions()
	opt.ResponseHeaderTimeout = 200 * time.Millisecond
	opt.MaxAttempts = 2
	c = newTestClient(t, opt)
	start := time.Now()
	_, err = c.Probe(ctxT(t), slow.url())
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("Probe of a slow endless header: %v; want a timeout", err)
	}
	// HEAD, then 2 GET attempts, each ended by the 200 ms header timeout.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("slow endless header took %v", d)
	}
}

// A declared size of 2^62 (Content-Length or Content-Range total) is taken as it is — the
// caller refuses it with --max-size or a free-space check — and no offset arithmetic
// overflows: a Fetch at the very end asks for the right Range and gets the right bytes.
// The largest size whose last byte Content-Range can name (MaxInt64-1) works too.
func TestHugeDeclaredSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
		b    fetchtest.Behavior
	}{
		{"2^62 by Content-Length", 1 << 62, fetchtest.Behavior{}},
		{"2^62 by Content-Range", 1 << 62, fetchtest.Behavior{HeadStatus: http.StatusForbidden}},
		{"MaxInt64-1 by Content-Length", math.MaxInt64 - 1, fetchtest.Behavior{}},
		{"MaxInt64-1 by Content-Range", math.MaxInt64 - 1, fetchtest.Behavior{HeadStatus: http.StatusForbidden}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fetchtest.Pattern(tc.size, 3)
			s := fetchtest.NewServer(p, tc.size, fetchtest.WithBehavior(tc.b))
			t.Cleanup(s.Close)
			c := newTestClient(t, fastOptions())
			o := mustProbe(t, c, s.URL())
			if o.Size != tc.size || !o.Ranges {
				t.Fatalf("Probe: size %d ranges %v; want %d true", o.Size, o.Ranges, tc.size)
			}
			s.ResetStats()
			for _, r := range []struct{ off, n int64 }{{tc.size - 1000, 1000}, {tc.size - 1, 1}, {1 << 40, 4096}} {
				var buf bytes.Buffer
				if err := o.Fetch(ctxT(t), r.off, r.n, &buf); err != nil {
					t.Fatalf("Fetch(%d, %d): %v", r.off, r.n, err)
				}
				checkBytes(t, buf.Bytes(), p, r.off)
				if int64(buf.Len()) != r.n {
					t.Fatalf("Fetch(%d, %d) wrote %d", r.off, r.n, buf.Len())
				}
			}
			want := []string{
				fmt.Sprintf("bytes=%d-%d", tc.size-1000, tc.size-1),
				fmt.Sprintf("bytes=%d-%d", tc.size-1, tc.size-1),
				fmt.Sprintf("bytes=%d-%d", int64(1)<<40, int64(1)<<40+4095),
			}
			if got := s.Ranges(); !slicesEqual(got, want) {
				t.Fatalf("ranges asked %q, want %q", got, want)
			}
			// Past the end, or lengths whose sum would overflow: refused before any request.
			for _, r := range []struct{ off, n int64 }{
				{tc.size, 1}, {tc.size - 1, 2}, {math.MaxInt64, 1}, {1, math.MaxInt64}, {math.MaxInt64, math.MaxInt64},
			} {
				if err := o.Fetch(ctxT(t), r.off, r.n, &bytes.Buffer{}); err == nil {
					t.Errorf("Fetch(%d, %d) beyond a %d-byte file succeeded", r.off, r.n, tc.size)
				}
			}
			if n := s.Stats().Requests; n != 3 {
				t.Fatalf("server saw %d requests, want the 3 valid ones", n)
			}
		})
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Sizes no Fetch could serve are refused at Probe: MaxInt64 (its last byte cannot be named
// in a Content-Range we accept), and lengths or totals beyond int64.
func TestImpossibleDeclaredSize(t *testing.T) {
	for _, tc := range []struct {
		name       string
		head, gets string // answer to HEAD; to the ranged GET probe
	}{
		{"Content-Length MaxInt64",
			"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\nAccept-Ranges: bytes\r\n\r\n", ""},
		{"Content-Length 2^63",
			"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\nAccept-Ranges: bytes\r\n\r\n",
			"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-0/9223372036854775808\r\nContent-Length: 1\r\n\r\nA"},
		{"Content-Range total MaxInt64",
			"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
			"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-0/9223372036854775807\r\nContent-Length: 1\r\n\r\nA"},
		{"Content-Range total 10^30",
			"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
			"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-0/1000000000000000000000000000000\r\nContent-Length: 1\r\n\r\nA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn, _ <-chan struct{}) {
				br := bufio.NewReader(c)
				for range 20 {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					ans := tc.gets
					if req.Method == http.MethodHead {
						ans = tc.head
					}
					if ans == "" {
						ans = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
					}
					if _, err := io.WriteString(c, ans); err != nil {
						return
					}
				}
			})
			c := newTestClient(t, fastOptions())
			o, err := c.Probe(ctxT(t), srv.url())
			if err == nil {
				t.Fatalf("Probe accepted a size of %d", o.Size)
			}
			t.Logf("Probe: %v", err)
		})
	}
}

// stalledErrorBody answers every request with status code, a Content-Length
// of 100 and no body, and holds the connection open.
func stalledErrorBody(code int) func(net.Conn, <-chan struct{}) {
	return func(c net.Conn, done <-chan struct{}) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == http.MethodHead {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nAccept-Ranges: bytes\r\nETag: \"e\"\r\n\r\n")
				continue
			}
			fmt.Fprintf(c, "HTTP/1.1 %d Oops\r\nContent-Length: 100\r\n\r\n", code)
			<-done
			return
		}
	}
}

// An error answer whose small body never arrives does not hang the client:
// the drain of the body it does not want is bounded in time, so a Fetch or
// a Probe gives up after its attempts like for any other error.
func TestStalledErrorBodyDoesNotHang(t *testing.T) {
	for _, code := range []int{500, 404} {
		s := newRawServer(t, stalledErrorBody(code))
		opt := fastOptions()
		opt.MaxAttempts = 2
		c := newTestClient(t, opt)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		o, err := c.Probe(ctx, s.url())
		if err != nil {
			cancel()
			t.Fatalf("HTTP %d: Probe: %v", code, err)
		}
		err = o.Fetch(ctx, 0, 100, io.Discard)
		cancel()
		var se *StatusError
		if !errors.As(err, &se) || se.Code != code {
			t.Errorf("HTTP %d with a stalled body: Fetch = %v after %v; want the status error", code, err, time.Since(start).Round(time.Millisecond))
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("HTTP %d with a stalled body took %v", code, d)
		}
	}
}
