package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
	"rangefs/fetch/fetchtest/testsync"
)

// offsetWriter writes into buf at a fixed offset, in order, like the cache's data file.
type offsetWriter struct {
	buf []byte
	at  int64
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	copy(w.buf[w.at:], p)
	w.at += int64(len(p))
	return len(p), nil
}

// fetchAll reads the whole file through fetch in chunk-sized calls from workers
// goroutines, the way the cache's pool does, and checks each call wrote exactly its bytes.
func fetchAll(ctx context.Context, t testing.TB, fetch func(context.Context, int64, int64, io.Writer) error,
	size, chunk int64, workers int) ([]byte, error) {
	t.Helper()
	out := make([]byte, size)
	next := make(chan int64)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for off := range next {
				n := min(chunk, size-off)
				w := &offsetWriter{buf: out, at: off}
				if err := fetch(ctx, off, n, w); err != nil {
					errs <- fmt.Errorf("chunk at %d: %w", off, err)
					return
				}
				if w.at != off+n {
					errs <- fmt.Errorf("chunk at %d: %d bytes written, want %d", off, w.at-off, n)
					return
				}
			}
		})
	}
	var err error
feed:
	for off := int64(0); off < size; off += chunk {
		select {
		case next <- off:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return out, err
}

// piecesOf hashes p in pieces of length.
func piecesOf(p *fetchtest.PatternReader, length int64) *Pieces {
	ps := &Pieces{Length: length}
	for off := int64(0); off < p.Size(); off += length {
		ps.SHA256 = append(ps.SHA256, sha256.Sum256(p.Bytes(off, min(length, p.Size()-off))))
	}
	return ps
}

// logBuffer collects log records for assertions.
type logBuffer struct{ testsync.Buffer }

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// mirrorSet starts n servers of the same pattern and probes each with its own client.
func mirrorSet(t *testing.T, p *fetchtest.PatternReader, opt Options, n int, srvOpts ...fetchtest.Option) ([]*fetchtest.Server, []*Object) {
	t.Helper()
	var ss []*fetchtest.Server
	var objs []*Object
	c := newTestClient(t, opt)
	for range n {
		s := fetchtest.NewServer(p, p.Size(), srvOpts...)
		t.Cleanup(s.Close)
		ss = append(ss, s)
		objs = append(objs, mustProbe(t, c, s.URL()))
	}
	return ss, objs
}

// The three servers of the issue: one slow, one that dies in the middle of a transfer, one
// that serves a wrong byte in one piece. With piece hashes the bad piece is caught and
// fetched from another mirror, the mirror that served it is demoted, and the result is exact.
func TestMirrorsSlowDyingAndCorruptWithPieces(t *testing.T) {
	const size, piece, chunk = 6<<20 + 1234, 256 << 10, 1 << 20
	p := fetchtest.Pattern(size, 21)
	opt := fastOptions()
	opt.StallTimeout = time.Second
	opt.Connections = 2
	ss, objs := mirrorSet(t, p, opt, 3)
	slow, dying, corrupt := ss[0], ss[1], ss[2]
	slow.SetConnRate(2 << 20)
	dying.Inject(fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: 100000, Times: 1, RangedOnly: true,
		After: func() { go dying.Close() }})
	const badOff = 3*piece + 777
	corrupt.Inject(fetchtest.Fault{Kind: fetchtest.Corrupt, Arg: badOff})
	var log logBuffer
	ms, err := NewMirrors(objs, MirrorOptions{Pieces: piecesOf(p, piece), Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	// The whole file, as the cache would fetch it; then the bad piece alone until the
	// corrupt mirror has been asked for it (each answer must be exact whoever served it).
	got, err := fetchAll(ctxT(t), t, ms.Fetch, size, chunk, 6)
	if err != nil {
		t.Fatalf("fetch through the mirrors: %v", err)
	}
	checkBytes(t, got, p, 0)
	for i := 0; i < 200 && ms.Stats()[2].Demotions == 0; i++ {
		var buf bytes.Buffer
		if err := ms.Fetch(ctxT(t), badOff-10, 20, &buf); err != nil {
			t.Fatalf("fetch of the bad piece: %v", err)
		}
		checkBytes(t, buf.Bytes(), p, badOff-10)
	}
	st := ms.Stats()
	if st[2].Demotions == 0 {
		t.Fatalf("the corrupt mirror was never demoted: %+v", st)
	}
	if !strings.Contains(log.String(), "fails its SHA-256") {
		t.Fatalf("no warning about the bad piece in the log:\n%s", log.String())
	}
	for i, s := range st {
		if s.Dropped != "" {
			t.Errorf("mirror %d dropped (%s); no mirror failed for good", i, s.Dropped)
		}
	}
	t.Logf("mirrors: %+v", st)
}

// Without piece hashes the same wrong byte cannot be caught: this is the documented limit
// (SEMANTICS.md), shown here so that it stays true to what the code does.
func TestMirrorsWithoutPiecesCannotCatchWrongBytes(t *testing.T) {
	const size = 1 << 20
	p := fetchtest.Pattern(size, 22)
	ss, objs := mirrorSet(t, p, fastOptions(), 1)
	ss[0].Inject(fetchtest.Fault{Kind: fetchtest.Corrupt, Arg: 1000})
	ms, err := NewMirrors(objs, MirrorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := ms.Fetch(ctxT(t), 0, 4096, &buf); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(buf.Bytes(), p.Bytes(0, 4096)) {
		t.Fatal("the fault did not corrupt the answer; the test shows nothing")
	}
}

// Honest mirrors, one slow, one dying midway, one stalling: without hashes the result is
// exact and comes from the others.
func TestMirrorsFailover(t *testing.T) {
	const size, chunk = 5<<20 + 99, 512 << 10
	p := fetchtest.Pattern(size, 23)
	opt := fastOptions()
	opt.StallTimeout = 300 * time.Millisecond
	opt.Connections = 2
	ss, objs := mirrorSet(t, p, opt, 4)
	ss[0].SetConnRate(2 << 20)
	ss[1].Inject(fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: 50000, Times: 1, RangedOnly: true,
		After: func() { go ss[1].Close() }})
	ss[2].Inject(fetchtest.Fault{Kind: fetchtest.Stall, Arg: 20000, RangedOnly: true})
	ms, err := NewMirrors(objs, MirrorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := fetchAll(ctxT(t), t, ms.Fetch, size, chunk, 8)
	if err != nil {
		t.Fatalf("fetch through the mirrors: %v", err)
	}
	checkBytes(t, got, p, 0)
	if st := ms.Stats(); st[3].Bytes == 0 {
		t.Fatalf("the healthy mirror served nothing: %+v", st)
	}
}

// Each mirror's connections stay within its host's limit, and every mirror is used.
func TestMirrorsPerHostLimit(t *testing.T) {
	const size, chunk = 4 << 20, 256 << 10
	p := fetchtest.Pattern(size, 24)
	opt := fastOptions()
	opt.Connections = 2
	ss, objs := mirrorSet(t, p, opt, 2, fetchtest.WithConnRate(8<<20))
	ms, err := NewMirrors(objs, MirrorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := fetchAll(ctxT(t), t, ms.Fetch, size, chunk, 8)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, got, p, 0)
	for i, s := range ss {
		st := s.Stats()
		if st.MaxConcurrent > 2 || st.RangeRequests == 0 {
			t.Errorf("mirror %d: %d requests at once (limit 2), %d ranged requests", i, st.MaxConcurrent, st.RangeRequests)
		}
	}
}

// A mirror whose own version changes is dropped and the others go on; when the last one
// changes, the error says the remote changed.
func TestMirrorsChangedMirrorDropped(t *testing.T) {
	const size = 2 << 20
	p := fetchtest.Pattern(size, 25)
	var log logBuffer
	ss, objs := mirrorSet(t, p, fastOptions(), 2)
	ms, err := NewMirrors(objs, MirrorOptions{Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ss[0].SetContent(fetchtest.DefaultPath, fetchtest.Pattern(size, 26), size)
	for i := 0; i < 100 && ms.Stats()[0].Dropped == ""; i++ {
		var buf bytes.Buffer
		if err := ms.Fetch(ctxT(t), int64(i)*1000, 1000, &buf); err != nil {
			t.Fatalf("fetch with one changed mirror: %v", err)
		}
		checkBytes(t, buf.Bytes(), p, int64(i)*1000)
	}
	if st := ms.Stats(); st[0].Dropped == "" || st[1].Dropped != "" {
		t.Fatalf("after the first mirror changed: %+v; want it dropped, the other in use", st)
	}
	if !strings.Contains(log.String(), "mirror dropped: its file changed") {
		t.Fatalf("no warning for the dropped mirror:\n%s", log.String())
	}
	ss[1].SetContent(fetchtest.DefaultPath, fetchtest.Pattern(size, 27), size)
	err = ms.Fetch(ctxT(t), 0, 1000, io.Discard)
	if !errors.Is(err, ErrChanged) || !isRemoteChanged(err) {
		t.Fatalf("fetch after every mirror changed: %v; want ErrChanged", err)
	}
	// Later calls fail the same way at once, without a request.
	before := ss[0].Stats().Requests + ss[1].Stats().Requests
	err = ms.Fetch(ctxT(t), 5000, 1000, io.Discard)
	if !errors.Is(err, ErrChanged) || !isRemoteChanged(err) {
		t.Fatalf("fetch once every mirror is dropped: %v; want ErrChanged", err)
	}
	if after := ss[0].Stats().Requests + ss[1].Stats().Requests; after != before {
		t.Fatalf("%d requests sent after every mirror was dropped", after-before)
	}
}

// Pieces that fail on every mirror: ErrPieceHash, and nothing of the piece written.
func TestMirrorsBadPieceEverywhere(t *testing.T) {
	const size, piece = 1 << 20, 64 << 10
	p := fetchtest.Pattern(size, 28)
	ss, objs := mirrorSet(t, p, fastOptions(), 2)
	for _, s := range ss {
		s.Inject(fetchtest.Fault{Kind: fetchtest.Corrupt, Arg: 2*piece + 5})
	}
	ms, err := NewMirrors(objs, MirrorOptions{Pieces: piecesOf(p, piece)})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err = ms.Fetch(ctxT(t), piece+100, 2*piece, &buf)
	if !errors.Is(err, ErrPieceHash) {
		t.Fatalf("fetch of a piece bad everywhere: %v; want ErrPieceHash", err)
	}
	if int64(buf.Len()) != piece-100 {
		t.Fatalf("writer got %d bytes, want the %d of the good piece before the bad one", buf.Len(), piece-100)
	}
	checkBytes(t, buf.Bytes(), p, piece+100)
}

// Sizes that differ, a server without ranges and bad piece lists are refused, naming the
// mirror.
func TestNewMirrorsRefuses(t *testing.T) {
	p := fetchtest.Pattern(1<<20, 29)
	q := fetchtest.Pattern(1<<20+1, 29)
	a := fetchtest.NewServer(p, p.Size())
	t.Cleanup(a.Close)
	b := fetchtest.NewServer(q, q.Size())
	t.Cleanup(b.Close)
	nr := fetchtest.NewServer(p, p.Size(), fetchtest.WithBehavior(fetchtest.Behavior{NoAcceptRanges: true}))
	t.Cleanup(nr.Close)
	nr.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
	c := newTestClient(t, fastOptions())
	oa, ob, on := mustProbe(t, c, a.URL()), mustProbe(t, c, b.URL()), mustProbe(t, c, nr.URL())
	for _, tc := range []struct {
		name string
		objs []*Object
		o    MirrorOptions
		want string
	}{
		{"sizes differ", []*Object{oa, ob}, MirrorOptions{}, "mirror " + ob.URL() + " is 1048577 bytes, but " + oa.URL() + " is 1048576"},
		{"metalink size differs", []*Object{oa}, MirrorOptions{Size: 5}, "mirror " + oa.URL() + " is 1048576 bytes, but the metalink says 5"},
		{"no ranges", []*Object{oa, on}, MirrorOptions{}, "mirror " + on.URL() + " does not answer Range requests"},
		{"twice", []*Object{oa, oa}, MirrorOptions{}, "given twice"},
		{"piece count", []*Object{oa}, MirrorOptions{Pieces: &Pieces{Length: 1 << 18, SHA256: make([][32]byte, 3)}}, "3 piece hashes"},
		{"huge pieces", []*Object{oa}, MirrorOptions{Pieces: &Pieces{Length: 1 << 30, SHA256: make([][32]byte, 1)}}, "buffered per connection"},
	} {
		_, err := NewMirrors(tc.objs, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// Object() stands for the set: cache identity and validator from the file hash when there
// is one, Fetch through the mirrors, Sources the mirror count.
func TestMirrorsObjectView(t *testing.T) {
	p := fetchtest.Pattern(1<<20, 30)
	_, objs := mirrorSet(t, p, fastOptions(), 2)
	ms, err := NewMirrors(objs, MirrorOptions{SHA256: p.SHA256(), Name: "weights.bin"})
	if err != nil {
		t.Fatal(err)
	}
	v := ms.Object()
	if v.Sources() != 2 || objs[0].Sources() != 1 || v.Name != "weights.bin" || !v.Ranges ||
		v.Identity() != "sha-256:"+p.SHA256() || v.ETag != `"sha-256:`+p.SHA256()+`"` || v.URL() != objs[0].URL() {
		t.Fatalf("view: sources %d, name %q, identity %q, etag %q, url %s", v.Sources(), v.Name, v.Identity(), v.ETag, v.URL())
	}
	var buf bytes.Buffer
	if err := v.Fetch(ctxT(t), 100, 5000, &buf); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, buf.Bytes(), p, 100)
}

// A mirror probed without headers never receives the Client's user headers, neither on
// the probe nor on fetches; the one probed normally does.
func TestProbeWithoutHeaders(t *testing.T) {
	p := fetchtest.Pattern(1<<20, 32)
	own := fetchtest.NewServer(p, p.Size())
	t.Cleanup(own.Close)
	other := fetchtest.NewServer(p, p.Size())
	t.Cleanup(other.Close)
	opt := fastOptions()
	opt.Header = map[string][]string{"Authorization": {"Bearer tok-for-own-host"}}
	c := newTestClient(t, opt)
	oOwn := mustProbe(t, c, own.URL())
	oOther, err := c.ProbeWithoutHeaders(ctxT(t), other.URL())
	if err != nil {
		t.Fatal(err)
	}
	ms, err := NewMirrors([]*Object{oOwn, oOther}, MirrorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fetchAll(ctxT(t), t, ms.Fetch, p.Size(), 64<<10, 4); err != nil {
		t.Fatal(err)
	}
	for _, r := range other.Requests() {
		if r.Header.Get("Authorization") != "" {
			t.Fatalf("the other mirror received Authorization on %s %s", r.Method, r.Range)
		}
	}
	for _, r := range own.Requests() {
		if r.Header.Get("Authorization") != "Bearer tok-for-own-host" {
			t.Fatalf("the URL's own host did not receive its header on %s %s", r.Method, r.Range)
		}
	}
	if len(other.Requests()) < 2 {
		t.Fatalf("the other mirror saw %d requests; the test needs fetches there too", len(other.Requests()))
	}
}
