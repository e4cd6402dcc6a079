package fetch

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
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
