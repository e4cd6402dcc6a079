package fetch

import (
	"bytes"
	"encoding/base64"
	"net"
	"strings"
	"testing"
)

// Options.ProxyURL (--proxy) sends every request through the named forward proxy, loopback
// included (HTTP_PROXY never applies to loopback), with its credentials; without it the
// same Client goes direct.
func TestFetchThroughProxyURL(t *testing.T) {
	s, p := newTestServer(t)
	px := newForwardProxy(t)
	pu, err := ParseProxyURL(strings.Replace(px.URL, "http://", "http://alice:s3cr3t-pw@", 1))
	if err != nil {
		t.Fatal(err)
	}
	opt := fastOptions()
	opt.ProxyURL = pu
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 1<<20, 1<<20, &buf); err != nil {
		t.Fatalf("Fetch through --proxy: %v", err)
	}
	checkBytes(t, buf.Bytes(), p, 1<<20)
	got := px.requests()
	if len(got) != 2 || got[0].uri != s.URL() || got[1].rng != "bytes=1048576-2097151" {
		t.Fatalf("proxy forwarded %+v; want the HEAD and the GET of the range, in absolute form", got)
	}
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cr3t-pw"))
	px.mu.Lock()
	for i, a := range px.auth {
		if a != wantAuth {
			t.Errorf("proxied request %d carried Proxy-Authorization %q, want the URL's credentials", i, a)
		}
	}
	px.mu.Unlock()
	if n := s.Stats().Requests; n != 2 {
		t.Fatalf("origin saw %d requests, want the 2 the proxy forwarded", n)
	}

	// The same server without ProxyURL: direct.
	direct := newTestClient(t, fastOptions())
	od := mustProbe(t, direct, s.URL())
	if err := od.Fetch(ctxT(t), 0, 1000, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if n := len(px.requests()); n != 2 {
		t.Fatalf("proxy saw %d requests after direct ones, want still 2", n)
	}
}

// A proxy that is down fails like an unreachable server, and its password never shows.
func TestProxyURLDownKeepsSecret(t *testing.T) {
	s, _ := newTestServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	pu, err := ParseProxyURL("http://bob:pr0xy-pa55@" + addr)
	if err != nil {
		t.Fatal(err)
	}
	opt := fastOptions()
	opt.ProxyURL = pu
	opt.MaxAttempts = 1
	c := newTestClient(t, opt)
	_, err = c.Probe(ctxT(t), s.URL())
	if err == nil {
		t.Fatal("Probe through a proxy that is down succeeded")
	}
	if !IsNetwork(err) || strings.Contains(err.Error(), "pr0xy-pa55") {
		t.Fatalf("Probe through a dead proxy: %v (IsNetwork %v); want a network error without the password", err, IsNetwork(err))
	}
}

func TestParseProxyURL(t *testing.T) {
	for _, tc := range []struct{ in, want, bad string }{
		{"127.0.0.1:3128", "http://127.0.0.1:3128", ""},
		{"http://proxy.internal:8080", "http://proxy.internal:8080", ""},
		{"https://proxy.internal", "https://proxy.internal", ""},
		{"socks5://127.0.0.1:1080", "socks5://127.0.0.1:1080", ""},
		{"ftp://proxy.internal", "", "scheme"},
		{"http://", "", "no host"},
		{"http://u:hunter22@proxy.internal/some/path", "", "scheme, host and port only"},
	} {
		u, err := ParseProxyURL(tc.in)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.bad == "" && u.String() != tc.want:
			t.Errorf("%q: %s, want %s", tc.in, u, tc.want)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q: %v, want an error saying %q", tc.in, err, tc.bad)
		case err != nil && strings.Contains(err.Error(), "hunter22"):
			t.Errorf("%q: the error shows the password: %v", tc.in, err)
		}
	}
}
