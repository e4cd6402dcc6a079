package fetch

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// freezeRelayAfter is a writer that freezes the relay's connections once it has received n
// bytes: the network path dies in the middle of an HTTP/2 stream.
type freezeRelayAfter struct {
	r    *fetchtest.Relay
	n    int
	done bool
	buf  []byte
}

func (w *freezeRelayAfter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if !w.done && len(w.buf) >= w.n {
		w.done = true
		w.r.Freeze()
	}
	return len(p), nil
}

// Over HTTPS with HTTP/2 every request of a Client shares one TCP connection. When its path
// dies (no FIN, no RST), ending the stream is not enough: the retry would open a new stream
// on the same dead connection, and so would every later one. The connection must be
// declared dead and a new one dialled, within the op timeout, both when it dies idle
// between requests and when it dies in the middle of a body.
func TestFetchHTTP2FrozenConnection(t *testing.T) {
	const opTimeout = 5 * time.Second
	for _, tc := range []struct {
		name     string
		freezeAt int // bytes of the body received before the path dies; 0 = idle, before the request
	}{
		{"idle", 0},
		{"mid-body", 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := newTestServer(t, fetchtest.WithHTTP2(), fetchtest.WithConnRate(4<<20))
			relay := fetchtest.NewRelay(s.Addr())
			t.Cleanup(relay.Close)
			c := newTestClient(t, fastOptions())
			trustOnly(c, s.Certificate())
			url := "https://" + relay.Addr() + fetchtest.DefaultPath

			o := mustProbe(t, c, url)
			if reqs := s.Requests(); len(reqs) == 0 || reqs[0].Proto != "HTTP/2.0" {
				t.Fatalf("probe requests %+v; want HTTP/2", reqs)
			}
			if n := relay.Accepted(); n != 1 {
				t.Fatalf("%d connections after the probe, want 1", n)
			}
			w := &freezeRelayAfter{r: relay, n: tc.freezeAt}
			if tc.freezeAt == 0 {
				if n := relay.Freeze(); n != 1 {
					t.Fatalf("froze %d connections, want the 1 idle one", n)
				}
				w.done = true
			}
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			start := time.Now()
			if err := o.Fetch(ctx, 0, testSize, w); err != nil {
				t.Fatalf("Fetch over HTTP/2 across a frozen connection, after %v (%d connections dialled): %v",
					time.Since(start).Round(time.Millisecond), relay.Accepted(), err)
			}
			if len(w.buf) != testSize {
				t.Fatalf("wrote %d bytes, want %d", len(w.buf), testSize)
			}
			checkBytes(t, w.buf, p, 0)
			if !w.done {
				t.Fatalf("the body never reached %d bytes before the freeze", tc.freezeAt)
			}
			if n := relay.Accepted(); n < 2 {
				t.Fatalf("%d connections dialled in all; want a new one after the freeze", n)
			}
			for _, r := range s.Requests() {
				if r.Proto != "HTTP/2.0" {
					t.Fatalf("a request went over %s; want HTTP/2 throughout", r.Proto)
				}
			}
		})
	}
}

// trustOnly makes c verify TLS against cert alone (the test server's self-signed one).
func trustOnly(c *Client, cert *x509.Certificate) {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c.tr.TLSClientConfig.RootCAs = pool
}
