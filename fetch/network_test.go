package fetch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"rangefs/fetch/fetchtest"
)

// A kept-alive connection whose path died while idle (no FIN, no RST: NAT timeout, peer
// gone) is not trusted forever: the request on it gets no header within
// ResponseHeaderTimeout, and the retry on a new connection delivers the bytes.
func TestFetchDeadKeptAliveConnection(t *testing.T) {
	s, p := newTestServer(t)
	opt := fastOptions()
	opt.ResponseHeaderTimeout = shortHeaderTimeout
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL()) // leaves one idle kept-alive connection
	if n := s.FreezeConnections(); n != 1 {
		t.Fatalf("froze %d connections, want the 1 idle one", n)
	}
	s.ResetStats()
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 5000, 100000, &buf); err != nil {
		t.Fatalf("Fetch over a dead kept-alive connection: %v", err)
	}
	checkBytes(t, buf.Bytes(), p, 5000)
	if buf.Len() != 100000 {
		t.Fatalf("wrote %d bytes, want 100000", buf.Len())
	}
	st := s.Stats()
	if st.Connections != 1 || st.Requests != 1 {
		t.Fatalf("server: %d new connections, %d requests seen; want 1 and 1 (the dead one swallowed the first)",
			st.Connections, st.Requests)
	}
}

// freezeAfter is a writer that freezes the server's connections once it has received n
// bytes: the path dies in the middle of a body.
type freezeAfter struct {
	s    *fetchtest.Server
	n    int
	once sync.Once
	bytes.Buffer
}

func (w *freezeAfter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if w.Len() >= w.n {
		w.once.Do(func() { w.s.FreezeConnections() })
	}
	return n, err
}

// The connection dies mid-body: the watchdog ends the attempt, and the retry asks for the
// remainder only, on a new connection; the bytes match the reference.
func TestFetchConnectionDiesMidBody(t *testing.T) {
	s, p := newTestServer(t, fetchtest.WithConnRate(4<<20)) // the body is still flowing when it dies
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	s.ResetStats()
	w := &freezeAfter{s: s, n: 256 << 10}
	if err := o.Fetch(ctxT(t), 0, testSize, w); err != nil {
		t.Fatalf("Fetch across a connection that died: %v", err)
	}
	checkBytes(t, w.Bytes(), p, 0)
	if w.Len() != testSize {
		t.Fatalf("wrote %d bytes, want %d", w.Len(), testSize)
	}
	r := s.Ranges()
	var start, end int64
	if len(r) != 2 || r[0] != fmt.Sprintf("bytes=0-%d", testSize-1) {
		t.Fatalf("ranges asked %q; want the whole file, then the remainder", r)
	}
	if _, err := fmt.Sscanf(r[1], "bytes=%d-%d", &start, &end); err != nil || start < 256<<10 || end != testSize-1 {
		t.Fatalf("retry asked %q; want the remainder after at least %d bytes", r[1], 256<<10)
	}
	if n := s.Stats().Connections; n != 1 {
		t.Fatalf("%d new connections, want 1 for the retry", n)
	}
}

// Connection refused: bounded retries (MaxAttempts dials), then an error that says so and
// that no caller can take for "deleted" or "changed".
func TestConnectionRefusedIsNotGone(t *testing.T) {
	s, _ := newTestServer(t)
	d := &recordingDialer{}
	opt := fastOptions()
	opt.DialContext = d.dial
	c := newTestClient(t, opt)
	o := mustProbe(t, c, s.URL())
	s.Close()
	c.Close() // no idle connection to the dead server: every attempt dials
	d.mu.Lock()
	d.addrs = nil
	d.mu.Unlock()

	err := o.Fetch(ctxT(t), 0, 100, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Fetch from a closed port: %v; want connection refused", err)
	}
	if errors.Is(err, ErrGone) || errors.Is(err, ErrChanged) || isRemoteChanged(err) {
		t.Fatalf("unreachable taken for gone/changed: %v", err)
	}
	d.mu.Lock()
	dials := len(d.addrs)
	d.mu.Unlock()
	if dials != opt.MaxAttempts {
		t.Fatalf("%d dials, want MaxAttempts = %d", dials, opt.MaxAttempts)
	}

	_, err = c.Probe(ctxT(t), s.URL())
	if err == nil || errors.Is(err, ErrGone) || isRemoteChanged(err) {
		t.Fatalf("Probe of a closed port: %v; want an error that is not gone/changed", err)
	}
}
