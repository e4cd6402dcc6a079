package fetch

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// UserAgent is sent on every request; a User-Agent in Header wins.
func TestUserAgentOption(t *testing.T) {
	srv, _ := newTestServer(t)
	c := NewClient(Options{UserAgent: "rangefs/test"})
	defer c.Close()
	o, err := c.Probe(context.Background(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Fetch(context.Background(), 0, 10, discard{}); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	if len(reqs) < 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for _, r := range reqs {
		if ua := r.Header.Get("User-Agent"); ua != "rangefs/test" {
			t.Errorf("%s %s: User-Agent %q", r.Method, r.Path, ua)
		}
	}
	c2 := NewClient(Options{UserAgent: "rangefs/test", Header: map[string][]string{"User-Agent": {"mine"}}})
	defer c2.Close()
	srv.ResetStats()
	if _, err := c2.Probe(context.Background(), srv.URL()); err != nil {
		t.Fatal(err)
	}
	if ua := srv.Requests()[len(srv.Requests())-1].Header.Get("User-Agent"); ua != "mine" {
		t.Errorf("Header's User-Agent lost: %q", ua)
	}
}

// RootCAs makes a certificate the system does not know verify.
func TestRootCAsOption(t *testing.T) {
	srv, _ := newTestServer(t, fetchtest.WithTLS())
	c := NewClient(Options{MaxAttempts: 1})
	defer c.Close()
	if _, err := c.Probe(context.Background(), srv.URL()); err == nil {
		t.Fatal("an unknown CA was accepted")
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c2 := NewClient(Options{RootCAs: pool})
	defer c2.Close()
	if _, err := c2.Probe(context.Background(), srv.URL()); err != nil {
		t.Fatalf("with RootCAs: %v", err)
	}
}

// ProbeRefusedAttempts ends a probe where nothing listens after that many
// attempts, without the MaxAttempts backoff schedule.
func TestProbeRefusedAttempts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + "/f"
	l.Close()
	var dials int
	o := Options{MaxAttempts: 6, RetryBase: time.Second, RetryCap: time.Second, ProbeRefusedAttempts: 2,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials++
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	c := NewClient(o)
	defer c.Close()
	start := time.Now()
	_, err = c.Probe(context.Background(), url)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want connection refused", err)
	}
	// HEAD, then two GET attempts; one backoff of at most RetryBase between them.
	if dials != 3 {
		t.Errorf("%d dials, want 3 (HEAD and two GETs)", dials)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("took %v", took)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

type countingObserver struct {
	mu        sync.Mutex
	codes     map[int]int
	transport int
	retries   int
	bytes     int64
}

func (o *countingObserver) Response(code int) { o.mu.Lock(); o.codes[code]++; o.mu.Unlock() }
func (o *countingObserver) TransportError()   { o.mu.Lock(); o.transport++; o.mu.Unlock() }
func (o *countingObserver) Retry(string)      { o.mu.Lock(); o.retries++; o.mu.Unlock() }
func (o *countingObserver) BodyBytes(n int64) { o.mu.Lock(); o.bytes += n; o.mu.Unlock() }

// The Observer hears of every response, retry and body byte; Limits shows
// the adaptive limit lowered by a 503.
func TestObserverAndLimits(t *testing.T) {
	srv, _ := newTestServer(t)
	srv.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 503, Times: 1, RangedOnly: true})
	obs := &countingObserver{codes: map[int]int{}}
	o := fastOptions()
	o.Observer = obs
	c := NewClient(o)
	defer c.Close()
	obj, err := c.Probe(context.Background(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := obj.Fetch(context.Background(), 0, 1<<20, discard{}); err != nil {
		t.Fatal(err)
	}
	// The server counts a request when its handler returns, which may be
	// just after the client has the body.
	for i := 0; srv.Stats().InFlight > 0 && i < 200; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	st := srv.Stats()
	total := 0
	for _, n := range obs.codes {
		total += n
	}
	if int64(total) != st.Requests || obs.codes[503] != 1 || obs.retries < 1 || obs.transport != 0 {
		t.Errorf("observed %v, %d retries, %d transport errors; the server answered %d requests", obs.codes, obs.retries, obs.transport, st.Requests)
	}
	if obs.bytes != st.BytesSent {
		t.Errorf("observed %d body bytes, the server sent %d", obs.bytes, st.BytesSent)
	}
	lims := c.Limits()
	if len(lims) != 1 || lims[0].Limit >= 8 || lims[0].InFlight != 0 {
		t.Errorf("limits %+v, want one host with its limit lowered from 8 and nothing in flight", lims)
	}
}
