package fetch

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// forwardProxy is a minimal HTTP forward proxy on 127.0.0.1 that records what it forwards.
type forwardProxy struct {
	*httptest.Server
	upstream *http.Transport
	mu       sync.Mutex
	seen     []proxied
	auth     []string // Proxy-Authorization of each request
}

type proxied struct{ method, uri, rng, ifRange string }

func newForwardProxy(t *testing.T) *forwardProxy {
	t.Helper()
	p := &forwardProxy{upstream: &http.Transport{DisableCompression: true}}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() { p.Close(); p.upstream.CloseIdleConnections() })
	return p
}

func (p *forwardProxy) serve(w http.ResponseWriter, r *http.Request) {
	if !r.URL.IsAbs() {
		http.Error(w, "not a proxy request", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, proxied{r.Method, r.RequestURI, r.Header.Get("Range"), r.Header.Get("If-Range")})
	p.auth = append(p.auth, r.Header.Get("Proxy-Authorization"))
	p.mu.Unlock()
	out, err := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, vv := range r.Header {
		switch k {
		case "Connection", "Proxy-Connection", "Proxy-Authorization", "Keep-Alive", "Te", "Trailer", "Upgrade":
			continue
		}
		out.Header[k] = vv
	}
	resp, err := p.upstream.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vv := range resp.Header {
		w.Header()[k] = vv
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func (p *forwardProxy) requests() []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxied(nil), p.seen...)
}

// With Options.Proxy (HTTP(S)_PROXY in production), every request goes through the proxy
// with its Range and If-Range exactly as asked, so chunk-aligned ranges stay aligned and a
// caching proxy can serve them to a fleet. (ProxyFromEnvironment never proxies loopback,
// hence the injected function.)
func TestFetchThroughProxy(t *testing.T) {
	s, p := newTestServer(t)
	px := newForwardProxy(t)
	pu, err := url.Parse(px.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt := fastOptions()
	opt.Proxy = http.ProxyURL(pu)
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	const chunk = 1 << 20
	for _, i := range []int64{0, 2, 1} {
		var buf bytes.Buffer
		if err := o.Fetch(ctxT(t), i*chunk, chunk, &buf); err != nil {
			t.Fatalf("Fetch of chunk %d through the proxy: %v", i, err)
		}
		checkBytes(t, buf.Bytes(), p, i*chunk)
	}
	want := []proxied{
		{http.MethodHead, s.URL(), "", ""},
		{http.MethodGet, s.URL(), "bytes=0-1048575", o.ETag},
		{http.MethodGet, s.URL(), "bytes=2097152-3145727", o.ETag},
		{http.MethodGet, s.URL(), "bytes=1048576-2097151", o.ETag},
	}
	got := px.requests()
	if len(got) != len(want) {
		t.Fatalf("proxy forwarded %+v; want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("proxied request %d = %+v; want %+v", i, got[i], want[i])
		}
	}
	// The origin saw the same aligned ranges, and only from the proxy.
	if r := s.Ranges(); strings.Join(r, " ") != "bytes=0-1048575 bytes=2097152-3145727 bytes=1048576-2097151" {
		t.Fatalf("origin saw ranges %q", r)
	}
}
