package fetch

import (
	"bytes"
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

// signalAfter is a writer that closes reached once it has received n bytes.
type signalAfter struct {
	n       int
	reached chan struct{}
	buf     []byte
}

func (w *signalAfter) Write(p []byte) (int, error) {
	had := len(w.buf)
	w.buf = append(w.buf, p...)
	if had < w.n && len(w.buf) >= w.n {
		close(w.reached)
	}
	return len(p), nil
}

// The other side of the rule: one HTTP/2 stream stalling on a connection that is still
// receiving (another stream flowing) ends that stream only. The connection stays, the
// other transfer is not disturbed, and the stalled range is retried on the same connection.
func TestFetchHTTP2StalledStreamKeepsLiveConnection(t *testing.T) {
	s, p := newTestServer(t, fetchtest.WithHTTP2(), fetchtest.WithConnRate(2<<20))
	relay := fetchtest.NewRelay(s.Addr())
	t.Cleanup(relay.Close)
	c := newTestClient(t, fastOptions())
	trustOnly(c, s.Certificate())
	o := mustProbe(t, c, "https://"+relay.Addr()+fetchtest.DefaultPath)

	flowing := &signalAfter{n: 256 << 10, reached: make(chan struct{})}
	flowErr := make(chan error, 1)
	go func() { flowErr <- o.Fetch(ctxT(t), 0, testSize, flowing) }()
	select {
	case <-flowing.reached:
	case err := <-flowErr:
		t.Fatalf("the flowing Fetch ended before %d bytes: %v", flowing.n, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the flowing Fetch received nothing in 10 s")
	}
	s.Inject(fetchtest.Fault{Kind: fetchtest.Stall, Arg: 16 << 10, Times: 1, RangedOnly: true})
	var stalled bytes.Buffer
	if err := o.Fetch(ctxT(t), 1<<20, 100000, &stalled); err != nil {
		t.Fatalf("Fetch whose first stream stalled: %v", err)
	}
	checkBytes(t, stalled.Bytes(), p, 1<<20)
	if err := <-flowErr; err != nil {
		t.Fatalf("the flowing Fetch beside the stalled stream: %v", err)
	}
	if len(flowing.buf) != testSize {
		t.Fatalf("the flowing Fetch wrote %d bytes, want %d", len(flowing.buf), testSize)
	}
	checkBytes(t, flowing.buf, p, 0)
	if n := countRanged(s); n != 3 {
		t.Fatalf("%d ranged requests; want 3 (the flow, the stalled stream, its retry)", n)
	}
	if n := relay.Accepted(); n != 1 {
		t.Fatalf("%d connections dialled; want the 1 live connection kept throughout", n)
	}
}

func countRanged(s *fetchtest.Server) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Range != "" {
			n++
		}
	}
	return n
}
