package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"rangefs/fs/archive/archivetest"
)

// waitDone waits for a tar.gz pass, failing the test after a minute.
func waitDone(t testing.TB, a *Archive) {
	t.Helper()
	select {
	case <-a.Done():
	case <-time.After(time.Minute):
		t.Fatal("tar.gz pass still running after a minute")
	}
}

func TestTarGzMatchesRealTools(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, src, out string)
	}{
		{"gnutar+gzip", func(t *testing.T, src, out string) {
			archivetest.Run(t, src, "tar", "--use-compress-program=gzip -6", "-cf", out, ".")
		}},
		{"gnutar+pigz", func(t *testing.T, src, out string) {
			archivetest.NeedTools(t, "pigz")
			archivetest.Run(t, src, "tar", "--use-compress-program=pigz -p 2 -b 128", "-cf", out, ".")
		}},
		{"bsdtar-z", func(t *testing.T, src, out string) {
			archivetest.NeedTools(t, "bsdtar")
			archivetest.Run(t, src, "bsdtar", "-czf", out, ".")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archivetest.NeedTools(t, "tar", "gzip")
			src := tarTree(t, 300)
			tp := filepath.Join(t.TempDir(), "a.tar.gz")
			tc.make(t, src, tp)
			f, size := openFile(t, tp)
			a := IndexTarGz(context.Background(), f, size, Limits{CheckpointSpan: 128 << 10, Window: 64 << 10})
			waitDone(t, a)
			if err := a.Err(); err != nil {
				t.Fatalf("Err: %v", err)
			}
			if done, total := a.Progress(); done != total {
				t.Errorf("Progress = %d of %d after the pass", done, total)
			}
			a.mu.RLock()
			ncp := len(a.gz.cps)
			a.mu.RUnlock()
			if ncp < 5 {
				t.Fatalf("%d checkpoints, want several", ncp)
			}
			archivetest.EqualNames(t, "listing vs tar tf", listedNames(a), toolListing(t, archivetest.Run(t, "", "tar", "tzf", tp)))
			// A tar.gz member is never a plain range of the archive: its
			// offsets are in the decompressed stream.
			for _, e := range a.Entries() {
				if _, ok := e.Span(); ok {
					t.Fatalf("tar.gz member %q offers a plain span of the archive", e.Name)
				}
			}
			if ix, err := a.MarshalBinary(); err != nil {
				t.Fatal(err)
			} else if re, err := LoadIndex(f, size, ix, Limits{}); err != nil {
				t.Fatal(err)
			} else {
				for _, e := range re.Entries() {
					if _, ok := e.Span(); ok {
						t.Fatalf("tar.gz member %q offers a plain span after LoadIndex", e.Name)
					}
				}
			}
			out := t.TempDir()
			archivetest.Run(t, out, "tar", "-xzf", tp)
			// Every member once; under -race inflating is slow, so the other
			// compressors' archives compare every fifth.
			every, least := 1, 300
			if tc.name != "gnutar+gzip" {
				every, least = 5, 60
			}
			if n := checkExtractedEvery(t, a, out, every); n < least {
				t.Fatalf("compared %d members", n)
			}
			for _, name := range []string{"d1/sub1/file 001-é.bin", "d2/sub2/file 002-é.dat", "sparse.img"} {
				want, _ := os.ReadFile(filepath.Join(out, name))
				randomReads(t, a, name, want, 12)
			}
			// The index survives a round trip and serves the same bytes with
			// no listing pass.
			blob, err := a.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			cr := &countingReaderAt{r: f}
			b, err := LoadIndex(cr, size, blob, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if cr.calls.Load() != 0 {
				t.Errorf("LoadIndex read the archive %d times", cr.calls.Load())
			}
			archivetest.EqualNames(t, "reloaded listing", listedNames(b), listedNames(a))
			if n := checkExtractedEvery(t, b, out, 10); n < 30 {
				t.Fatalf("compared %d members after reload", n)
			}
		})
	}
}

// gatedReaderAt blocks reads past an offset until it is opened.
type gatedReaderAt struct {
	r     io.ReaderAt
	limit int64
	open  chan struct{}
	once  sync.Once
}

func (g *gatedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > g.limit {
		<-g.open
	}
	return g.r.ReadAt(p, off)
}

// TestTarGzMembersReadableDuringPass holds the pass halfway through the
// archive and reads members it has already listed.
func TestTarGzMembersReadableDuringPass(t *testing.T) {
	archivetest.NeedTools(t, "tar", "gzip")
	src := tarTree(t, 300)
	tp := filepath.Join(t.TempDir(), "a.tar.gz")
	archivetest.Run(t, src, "tar", "-czf", tp, ".")
	f, size := openFile(t, tp)
	g := &gatedReaderAt{r: f, limit: size / 2, open: make(chan struct{})}
	defer g.once.Do(func() { close(g.open) })
	a := IndexTarGz(context.Background(), g, size, Limits{CheckpointSpan: 64 << 10})
	deadline := time.Now().Add(30 * time.Second)
	for a.Len() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d entries listed after 30 s", a.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-a.Done():
		t.Fatal("the pass finished while its reads were held")
	default:
	}
	out := t.TempDir()
	archivetest.Run(t, out, "tar", "-xzf", tp)
	read := 0
	for _, e := range a.Entries() {
		if e.Mode.Type() != 0 {
			continue
		}
		got := readAll(t, a, e.Name, 32<<10)
		if want := fileSHA(t, filepath.Join(out, e.Name)); sha(got) != want {
			t.Fatalf("%q read during the pass: wrong sha256", e.Name)
		}
		read++
	}
	if read == 0 {
		t.Fatal("no regular member listed before the gate")
	}
	if _, err := a.MarshalBinary(); err == nil {
		t.Error("MarshalBinary succeeded while the pass runs")
	}
	g.once.Do(func() { close(g.open) })
	waitDone(t, a)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d members read while the pass was held; %d listed in the end", read, a.Len())
}

// TestTarGzWaitLookup: during a held pass, WaitLookup answers a listed
// name at once, waits for a name the pass has not reached (until ctx ends,
// or the pass lists it) and reports a missing name only once the pass is
// complete.
func TestTarGzWaitLookup(t *testing.T) {
	const n = 64
	tgz, _ := archivetest.TarGz(t, n, 64<<10, 9)
	g := &gatedReaderAt{r: bytes.NewReader(tgz), limit: int64(len(tgz)) / 2, open: make(chan struct{})}
	defer g.once.Do(func() { close(g.open) })
	a := IndexTarGz(context.Background(), g, int64(len(tgz)), Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e, ok, err := a.WaitLookup(ctx, archivetest.MemberName(1)); !ok || err != nil || e.Size != 64<<10 {
		t.Fatalf("WaitLookup of an early member: %+v, %v, %v", e, ok, err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	if e, ok, err := a.WaitLookup(short, archivetest.MemberName(n-1)); ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLookup of a member past the held pass: %+v, %v, %v; want it to wait until its context ends", e, ok, err)
	}
	type result struct {
		ok  bool
		err error
	}
	late, missing := make(chan result, 1), make(chan result, 1)
	go func() { _, ok, err := a.WaitLookup(ctx, archivetest.MemberName(n-1)); late <- result{ok, err} }()
	go func() { _, ok, err := a.WaitLookup(ctx, "nope"); missing <- result{ok, err} }()
	g.once.Do(func() { close(g.open) })
	if r := <-late; !r.ok || r.err != nil {
		t.Errorf("WaitLookup of the last member after the release: %v, %v", r.ok, r.err)
	}
	if r := <-missing; r.ok || r.err != nil {
		t.Errorf("WaitLookup of a missing name: %v, %v; want false, nil", r.ok, r.err)
	}
	select {
	case <-a.Done():
	default:
		t.Error("WaitLookup reported a name missing before the pass was done")
	}
}

// TestTarGzCancel stops a held pass through its context.
func TestTarGzCancel(t *testing.T) {
	archivetest.NeedTools(t, "tar", "gzip")
	src := tarTree(t, 50)
	tp := filepath.Join(t.TempDir(), "a.tar.gz")
	archivetest.Run(t, src, "tar", "-czf", tp, ".")
	f, size := openFile(t, tp)
	ctx, cancel := context.WithCancel(context.Background())
	a := IndexTarGz(ctx, f, size, Limits{})
	cancel()
	waitDone(t, a)
	if err := a.Err(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Err = %v, want nil (finished first) or context.Canceled", err)
	}
}

// TestTarGzMemberReadStartsAtCheckpoint reads one member from the middle of
// an indexed archive: no archive byte before the checkpoint preceding it
// is read.
func TestTarGzMemberReadStartsAtCheckpoint(t *testing.T) {
	archivetest.NeedTools(t, "tar", "gzip")
	src := tarTree(t, 300)
	tp := filepath.Join(t.TempDir(), "a.tar.gz")
	archivetest.Run(t, src, "tar", "-czf", tp, ".")
	f, size := openFile(t, tp)
	a := IndexTarGz(context.Background(), f, size, Limits{CheckpointSpan: 64 << 10})
	waitDone(t, a)
	entries := a.Entries()
	var mid Entry
	for _, e := range entries[len(entries)/2:] {
		if e.Mode.Type() == 0 && e.Size > 1000 {
			mid = e
			break
		}
	}
	cp := a.checkpointBefore(mid.data.dataOff)
	if cp == nil {
		t.Fatal("no checkpoint before a member in the middle")
	}
	lo := &lowestReaderAt{r: f, min: -1}
	b, err := LoadIndex(lo, size, must(a.MarshalBinary()), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, b, mid.Name, 64<<10)
	if lo.min < cp.in {
		t.Fatalf("reading %q read the archive from %d, before its checkpoint at %d", mid.Name, lo.min, cp.in)
	}
	t.Logf("%q (%d bytes at tar offset %d): read %d archive bytes from %d (checkpoint in %d, out %d)", mid.Name, mid.Size, mid.data.dataOff, lo.n, lo.min, cp.in, cp.out)
}

type lowestReaderAt struct {
	r   io.ReaderAt
	mu  sync.Mutex
	min int64
	n   int64
}

func (l *lowestReaderAt) ReadAt(p []byte, off int64) (int, error) {
	l.mu.Lock()
	if l.min < 0 || off < l.min {
		l.min = off
	}
	l.n += int64(len(p))
	l.mu.Unlock()
	return l.r.ReadAt(p, off)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTarGzCheckpointsBounded: a pass that would make more checkpoints than
// MaxCheckpoints thins them and still reads every member right.
func TestTarGzCheckpointsBounded(t *testing.T) {
	archivetest.NeedTools(t, "tar", "gzip")
	src := tarTree(t, 200)
	tp := filepath.Join(t.TempDir(), "a.tar.gz")
	archivetest.Run(t, src, "tar", "-czf", tp, ".")
	f, size := openFile(t, tp)
	a := IndexTarGz(context.Background(), f, size, Limits{CheckpointSpan: 8 << 10, MaxCheckpoints: 6})
	waitDone(t, a)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	a.mu.RLock()
	n := len(a.gz.cps)
	a.mu.RUnlock()
	if n > 6 || n < 3 {
		t.Fatalf("%d checkpoints, want 3 to 6", n)
	}
	out := t.TempDir()
	archivetest.Run(t, out, "tar", "-xzf", tp)
	if n := checkExtractedEvery(t, a, out, 10); n < 20 {
		t.Fatalf("compared %d members", n)
	}
}

// passRecorder is a PassOpener over a byte slice: it records each pass's
// hint and the furthest byte read through it.
type passRecorder struct {
	b      []byte
	mu     sync.Mutex
	passes [][3]int64 // off, end, furthest byte read + 1
}

func (p *passRecorder) ReadAt(b []byte, off int64) (int, error) {
	return bytes.NewReader(p.b).ReadAt(b, off)
}

func (p *passRecorder) OpenPass(off, end int64) (ReadAtCloser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.passes = append(p.passes, [3]int64{off, end, 0})
	return &passRead{p: p, i: len(p.passes) - 1}, nil
}

type passRead struct {
	p *passRecorder
	i int
}

func (r *passRead) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.p.ReadAt(b, off)
	r.p.mu.Lock()
	r.p.passes[r.i][2] = max(r.p.passes[r.i][2], off+int64(n))
	r.p.mu.Unlock()
	return n, err
}

func (r *passRead) Close() error { return nil }

// A tar.gz member read tells its PassOpener where the member's compressed
// data ends, from the pass's record (kept by the index) or, in an index
// without it, from the next checkpoint; the read stays within that hint.
func TestTarGzMemberPassIsBounded(t *testing.T) {
	const member, n = 256 << 10, 40
	tgz, contents := archivetest.TarGz(t, n, member, 9)
	src := &passRecorder{b: tgz}
	size := int64(len(tgz))
	lim := Limits{CheckpointSpan: 1 << 20}
	a := IndexTarGz(context.Background(), src, size, lim)
	waitDone(t, a)
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	ix, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	re, err := LoadIndex(src, size, ix, lim)
	if err != nil {
		t.Fatal(err)
	}
	ratio := float64(size) / float64(n*member)
	for _, tc := range []struct {
		what string
		a    *Archive
	}{{"after the pass", a}, {"after LoadIndex", re}, {"from an index without the record", re}} {
		if tc.what == "from an index without the record" {
			for _, e := range tc.a.entries {
				e.data.limit = 0
			}
		}
		for _, i := range []int{7, 20, 33} {
			src.mu.Lock()
			src.passes = nil
			src.mu.Unlock()
			if got := readAll(t, tc.a, archivetest.MemberName(i), 128<<10); !bytes.Equal(got, contents[i]) {
				t.Fatalf("%s: m%02d: wrong content", tc.what, i)
			}
			src.mu.Lock()
			passes := append([][3]int64(nil), src.passes...)
			src.mu.Unlock()
			if len(passes) != 1 {
				t.Fatalf("%s: m%02d: %d passes, want 1", tc.what, i, len(passes))
			}
			off, end, read := passes[0][0], passes[0][1], passes[0][2]
			// The member's compressed data ends at about this archive offset.
			approx := int64(float64((i+1)*(member+512)+512) * ratio)
			slack := int64(passSlack + 64<<10)
			if tc.what == "from an index without the record" {
				slack += int64(float64(lim.CheckpointSpan)*ratio) + 64<<10
			}
			t.Logf("%s: m%02d: pass [%d, %d) read to %d; data ends about %d", tc.what, i, off, end, read, approx)
			if end < approx-64<<10 || end > approx+slack {
				t.Errorf("%s: m%02d: pass hint ends at %d, the member's data at about %d", tc.what, i, end, approx)
			}
			if read > end+64<<10 || off >= end {
				t.Errorf("%s: m%02d: pass [%d, %d) read to %d", tc.what, i, off, end, read)
			}
		}
	}
}
