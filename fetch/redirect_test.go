package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"rangefs/fetch/fetchtest"
)

// recordingDialer dials loopback for real and records every address it was asked for.
type recordingDialer struct {
	mu    sync.Mutex
	addrs []string
}

func (d *recordingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		if host != "localhost" {
			// Never leave the machine, whatever a test gets wrong.
			return nil, fmt.Errorf("recordingDialer: refusing non-loopback %s", addr)
		}
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *recordingDialer) asked(host string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.addrs, func(a string) bool {
		h, _, _ := net.SplitHostPort(a)
		return h == host
	})
}

func TestRedirectChainResendsRange(t *testing.T) {
	s, p := newTestServer(t)
	s.Redirect("/a", "/b", http.StatusFound)
	s.Redirect("/b", "/c", http.StatusTemporaryRedirect)
	s.Redirect("/c", "/d", http.StatusMovedPermanently)
	s.Redirect("/d", fetchtest.DefaultPath, http.StatusPermanentRedirect)
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URLFor("/a"))
	if o.Name != "a" || o.Size != p.Size() {
		t.Fatalf("Probe via redirects: name %q size %d", o.Name, o.Size)
	}
	s.ResetStats()
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 777, 5000, &buf); err != nil {
		t.Fatalf("Fetch via 4 redirects: %v", err)
	}
	checkBytes(t, buf.Bytes(), p, 777)
	reqs := s.Requests()
	if len(reqs) != 5 {
		t.Fatalf("server saw %d requests, want 5 (4 hops + final)", len(reqs))
	}
	for _, r := range reqs {
		if r.Range != "bytes=777-5776" || r.IfRange != o.ETag || r.Header.Get("Accept-Encoding") != "identity" {
			t.Fatalf("hop %s: Range %q If-Range %q Accept-Encoding %q; want them re-sent on every hop",
				r.Path, r.Range, r.IfRange, r.Header.Get("Accept-Encoding"))
		}
	}
}

func TestRedirectRefused(t *testing.T) {
	s, _ := newTestServer(t)
	// Loop.
	s.Redirect("/loop1", "/loop2", http.StatusFound)
	s.Redirect("/loop2", "/loop1", http.StatusFound)
	// Six hops: one too many. Five hops: fine.
	for i := range 6 {
		s.Redirect(fmt.Sprintf("/six%d", i), fmt.Sprintf("/six%d", i+1), http.StatusFound)
		s.Redirect(fmt.Sprintf("/five%d", i), fmt.Sprintf("/five%d", i+1), http.StatusFound)
	}
	s.Redirect("/six6", fetchtest.DefaultPath, http.StatusFound)
	s.Redirect("/five4", fetchtest.DefaultPath, http.StatusFound)
	s.Redirect("/tofile", "file:///etc/passwd", http.StatusFound)
	s.Redirect("/ftp", "ftp://127.0.0.1/x", http.StatusFound)
	s.Redirect("/meta", "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	s.Redirect("/meta6", "http://[fe80::1]/x", http.StatusFound)
	s.Redirect("/zero", "http://0.0.0.0:80/x", http.StatusFound)
	s.Redirect("/mcast", "http://224.0.0.1/x", http.StatusFound)
	s.Redirect("/mapped", "http://[::ffff:169.254.169.254]/x", http.StatusFound)

	d := &recordingDialer{}
	opt := fastOptions()
	opt.DialContext = d.dial
	c := newTestClient(t, opt)
	if _, err := c.Probe(ctxT(t), s.URLFor("/five0")); err != nil {
		t.Fatalf("5 redirects: %v", err)
	}
	for _, path := range []string{"/loop1", "/six0", "/tofile", "/ftp", "/meta", "/meta6", "/zero", "/mcast", "/mapped"} {
		_, err := c.Probe(ctxT(t), s.URLFor(path))
		if !errors.Is(err, ErrRedirect) {
			t.Errorf("%s: Probe: %v; want ErrRedirect", path, err)
		}
	}
	for _, h := range []string{"169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "::ffff:169.254.169.254"} {
		if d.asked(h) {
			t.Errorf("the dialer was asked to connect to %s", h)
		}
	}
}

func TestRedirectHTTPSToHTTPRefused(t *testing.T) {
	plain, _ := newTestServer(t)
	tlsSrv, p := newTestServer(t, fetchtest.WithTLS())
	tlsSrv.Redirect("/down", plain.URL(), http.StatusFound)
	tlsSrv.Redirect("/same", fetchtest.DefaultPath, http.StatusFound)
	opt := fastOptions()
	opt.Insecure = true
	c := newTestClient(t, opt)
	if _, err := c.Probe(ctxT(t), tlsSrv.URLFor("/down")); !errors.Is(err, ErrRedirect) {
		t.Fatalf("https->http redirect: %v; want ErrRedirect", err)
	}
	if n := plain.Stats().Requests; n != 0 {
		t.Fatalf("the http server saw %d requests", n)
	}
	o := mustProbe(t, c, tlsSrv.URLFor("/same"))
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 10, 1000, &buf); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, buf.Bytes(), p, 10)
}

func TestTLSVerified(t *testing.T) {
	s, _ := newTestServer(t, fetchtest.WithTLS())
	c := newTestClient(t, fastOptions())
	_, err := c.Probe(ctxT(t), s.URL())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Probe of a self-signed server: %v; want a certificate error", err)
	}
	if retryable(err) {
		t.Fatalf("certificate error %v classified as retryable", err)
	}
	if n := s.Stats().Requests; n != 0 {
		t.Fatalf("server saw %d requests over an unverified TLS connection", n)
	}
}

// User headers and userinfo credentials go to the original host only; the Referer (which
// would carry the signed query) goes nowhere.
func TestRedirectDropsHeadersAcrossHosts(t *testing.T) {
	s, p := newTestServer(t)
	s.Redirect("/same", fetchtest.DefaultPath, http.StatusFound)
	s.Redirect("/cross", s.URLWithHost("localhost", "/hop"), http.StatusFound)
	s.Redirect("/hop", s.URL(), http.StatusFound) // and back to the original host
	opt := fastOptions()
	opt.Header = http.Header{"X-Api-Key": {"k3y-value"}, "Authorization": {"Bearer t0ken"}}
	c := newTestClient(t, opt)

	o := mustProbe(t, c, strings.Replace(s.URLFor("/same"), "http://", "http://user:pw@", 1)+"?sig=abc123")
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 0, 100, &buf); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Requests() {
		if r.Header.Get("X-Api-Key") != "k3y-value" || r.Header.Get("Authorization") != "Bearer t0ken" {
			t.Fatalf("same-host hop %s lacks the user headers", r.Path)
		}
		if r.Header.Get("Referer") != "" {
			t.Fatalf("hop %s got a Referer", r.Path)
		}
	}

	s.ResetStats()
	o = mustProbe(t, c, strings.Replace(s.URLFor("/cross"), "http://", "http://user:pw@", 1)+"?sig=abc123")
	buf.Reset()
	if err := o.Fetch(ctxT(t), 0, 100, &buf); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, buf.Bytes(), p, 0)
	if !slices.ContainsFunc(s.Requests(), func(r fetchtest.Request) bool { return strings.HasPrefix(r.Host, "localhost:") }) {
		t.Fatal("no request reached the second host name")
	}
	for _, r := range s.Requests() {
		first := r.Path == "/cross"
		hasAuth := r.Header.Get("Authorization") != "" || r.Header.Get("X-Api-Key") != ""
		if first != hasAuth {
			t.Fatalf("request %s %s (host %s): credentials present = %v; want only on the first hop",
				r.Method, r.Path, r.Host, hasAuth)
		}
		if r.Header.Get("Referer") != "" || (!first && r.RawQuery != "") {
			t.Fatalf("request %s leaked Referer %q / query %q", r.Path, r.Header.Get("Referer"), r.RawQuery)
		}
	}
}

// Userinfo becomes basic auth (for the original host).
func TestUserinfoBecomesBasicAuth(t *testing.T) {
	s, _ := newTestServer(t)
	c := newTestClient(t, fastOptions())
	mustProbe(t, c, strings.Replace(s.URL(), "http://", "http://alice:s3cret@", 1))
	r := s.Requests()[0]
	req := &http.Request{Header: r.Header}
	if u, pw, ok := req.BasicAuth(); !ok || u != "alice" || pw != "s3cret" {
		t.Fatalf("basic auth = %q %q %v", u, pw, ok)
	}
}

// The dial-time check refuses forbidden addresses (a DNS name can resolve to one), unless
// the user asked for that very address.
func TestDialRefusesForbiddenAddresses(t *testing.T) {
	d := &recordingDialer{}
	c := newTestClient(t, Options{DialContext: d.dial})
	dial := c.dialer()
	for _, addr := range []string{"169.254.169.254:80", "[fe80::1]:80", "0.0.0.0:80", "[::]:80", "239.1.2.3:80"} {
		if _, err := dial(context.Background(), "tcp", addr); !errors.Is(err, ErrRedirect) {
			t.Errorf("dial %s: %v; want refusal", addr, err)
		}
	}
	if len(d.addrs) != 0 {
		t.Fatalf("inner dialer was asked for %q", d.addrs)
	}
	// Explicitly requested: passed through to the (recording, refusing) dialer.
	ctx := context.WithValue(context.Background(), allowKey{}, netip.MustParseAddr("169.254.169.254"))
	if _, err := dial(ctx, "tcp", "169.254.169.254:80"); errors.Is(err, ErrRedirect) {
		t.Fatalf("explicitly requested link-local address refused: %v", err)
	}
	if !d.asked("169.254.169.254") {
		t.Fatal("explicitly requested address never reached the dialer")
	}
	// The real dialer checks resolved addresses in its Control hook.
	real := NewClient(Options{DialTimeout: 200e6})
	defer real.Close()
	ctl := real.controlDial()
	if err := ctl(context.Background(), "tcp4", "169.254.169.254:80", nil); !errors.Is(err, ErrRedirect) {
		t.Fatalf("control hook: %v; want refusal", err)
	}
	if err := ctl(context.Background(), "tcp4", "127.0.0.1:80", nil); err != nil {
		t.Fatalf("control hook refused loopback: %v", err)
	}
}

// fakeDNS answers A queries from a table over in-memory connections, so the real
// net.Dialer (and its address check) resolves names without any real DNS. Unknown names
// and AAAA queries get an empty NOERROR answer. Safe for concurrent use.
type fakeDNS struct {
	names map[string]netip.Addr // "name." -> IPv4 address
	mu    sync.Mutex
	asked []string
}

func (f *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		client, server := net.Pipe()
		go f.serve(server)
		return client, nil
	}}
}

// serve answers DNS-over-stream queries (2-byte length prefix) until the client hangs up.
func (f *fakeDNS) serve(c net.Conn) {
	defer c.Close()
	for range 16 {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, int(l[0])<<8|int(l[1]))
		if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
			return
		}
		// Question: labels from offset 12, then type and class.
		var name strings.Builder
		i := 12
		for i < len(q) && q[i] != 0 {
			n := int(q[i])
			if i+1+n > len(q) {
				return
			}
			name.WriteString(strings.ToLower(string(q[i+1 : i+1+n])))
			name.WriteByte('.')
			i += 1 + n
		}
		end := i + 5 // zero label, type, class
		if end > len(q) {
			return
		}
		qtype := int(q[i+1])<<8 | int(q[i+2])
		f.mu.Lock()
		f.asked = append(f.asked, name.String())
		f.mu.Unlock()
		addr, ok := f.names[name.String()]
		answers := 0
		if ok && qtype == 1 {
			answers = 1
		}
		// Header: same ID; QR, RD, RA; one question; the answers.
		resp := []byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, byte(answers), 0, 0, 0, 0}
		resp = append(resp, q[12:end]...)
		if answers == 1 {
			a := addr.As4()
			resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, a[0], a[1], a[2], a[3])
		}
		if _, err := c.Write(append([]byte{byte(len(resp) >> 8), byte(len(resp))}, resp...)); err != nil {
			return
		}
	}
}

func (f *fakeDNS) wasAsked(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.asked, name)
}

// A redirect to a host NAME that resolves to a link-local address (cloud metadata) is
// refused by the real dialer's check on the resolved address, which runs before connect(2):
// no packet leaves. The same path connects to a name that resolves to loopback, which shows
// the fake resolver is the one the dialer used.
func TestRedirectToNameResolvingToLinkLocal(t *testing.T) {
	s, p := newTestServer(t)
	port := s.Addr()[strings.LastIndexByte(s.Addr(), ':')+1:]
	dns := &fakeDNS{names: map[string]netip.Addr{
		"metadata.test.": netip.MustParseAddr("169.254.169.254"),
		"zero.test.":     netip.MustParseAddr("0.0.0.0"),
		"loopback.test.": netip.MustParseAddr("127.0.0.1"),
	}}
	s.Redirect("/meta", "http://metadata.test/latest/meta-data/", http.StatusFound)
	s.Redirect("/zero", "http://zero.test:"+port+"/file", http.StatusFound)
	s.Redirect("/loop", "http://loopback.test:"+port+fetchtest.DefaultPath, http.StatusFound)
	c := newClient(fastOptions(), dns.resolver())
	t.Cleanup(c.Close)

	for _, tc := range []struct{ path, name, addr string }{
		{"/meta", "metadata.test.", "169.254.169.254"},
		{"/zero", "zero.test.", "0.0.0.0"},
	} {
		s.ResetStats()
		_, err := c.Probe(ctxT(t), s.URLFor(tc.path))
		if !errors.Is(err, ErrRedirect) || !strings.Contains(err.Error(), "refusing to connect to "+tc.addr) {
			t.Fatalf("%s: Probe: %v; want the dial-time refusal of %s", tc.path, err, tc.addr)
		}
		if !dns.wasAsked(tc.name) {
			t.Fatalf("%s: the fake resolver was never asked for %s", tc.path, tc.name)
		}
		// HEAD is refused; the error is final, so no GET probe follows.
		if n := s.Stats().Requests; n != 1 {
			t.Fatalf("%s: server saw %d requests, want the 1 redirected HEAD", tc.path, n)
		}
	}

	o := mustProbe(t, c, s.URLFor("/loop"))
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 10, 1000, &buf); err != nil {
		t.Fatalf("Fetch through a name resolving to loopback: %v", err)
	}
	checkBytes(t, buf.Bytes(), p, 10)
	if !dns.wasAsked("loopback.test.") {
		t.Fatal("the fake resolver was never asked for loopback.test")
	}
}
