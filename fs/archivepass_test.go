package fs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/cache/cachetest"
	"rangefs/fetch/fetchtest/testsync"
)

// gatedSource serves an archive from memory, holding every fetch that
// reaches past limit until release is called (or the fetch's context ends).
type gatedSource struct {
	*cachetest.Source
	held atomic.Bool // a fetch has waited at the gate
	open chan struct{}
	once sync.Once
}

func newGatedSource(b []byte, limit int64) *gatedSource {
	s := &gatedSource{Source: cachetest.BytesSource(b), open: make(chan struct{})}
	s.Gate = func(off, n int64) <-chan struct{} {
		if off+n > limit {
			s.held.Store(true)
			return s.open
		}
		return nil
	}
	return s
}

func (s *gatedSource) release() { s.once.Do(func() { close(s.open) }) }

// passTarGz makes a gzipped tar of n members of size bytes (6-bit bytes,
// which deflate to about three quarters), the first half under early/ and
// the rest under late/, and returns it with the members by name.
func passTarGz(t *testing.T, n, size int) ([]byte, []string, map[string][]byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(12, 34))
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, 6)
	tw := tar.NewWriter(zw)
	var names []string
	members := map[string][]byte{}
	for i := range n {
		dir := "early"
		if i >= n/2 {
			dir = "late"
		}
		name := fmt.Sprintf("%s/m%04d.bin", dir, i)
		b := make([]byte, size)
		for j := range b {
			b[j] = 'A' + byte(rng.Uint32())&0x3f
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		members[name] = b
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), names, members
}

// statResult is what an os.Stat started in the background gave.
type statResult struct {
	fi  os.FileInfo
	err error
}

func statAsync(name string) chan statResult {
	c := make(chan statResult, 1)
	go func() {
		fi, err := os.Stat(name)
		c <- statResult{fi, err}
	}()
	return c
}

// TestTarGzLookupsDuringPass holds a tar.gz's indexing pass halfway (the
// server holds every byte past the middle): a member the pass has already
// indexed is found and read with the right bytes while it is held, and the
// pass shows in ArchiveIndexing; a member it has not reached, and a name
// the archive lacks, wait for it; once it is released, the late member is
// found and read, the missing name is ENOENT, and the pass is no longer
// shown.
func TestTarGzLookupsDuringPass(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping a real mount: /dev/fuse is not available here (%v)", err)
	}
	const n, size = 64, 64 << 10
	tgz, names, members := passTarGz(t, n, size)
	src := newGatedSource(tgz, int64(len(tgz))/2)
	f, err := cache.Open(filepath.Join(t.TempDir(), "obj"), cache.Meta{Size: int64(len(tgz)), ChunkSize: chunk, ETag: `"v1"`, URL: "http://test/a.tar.gz"},
		src, cache.Options{ReadAheadMax: 4 * chunk})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testsync.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ix := NewArchiveIndexing()
	root := WithArchives(Static([]Entry{{Name: "a.tar.gz", File: CacheFile(f, time.Time{})}}, time.Time{}),
		ArchiveOptions{Logger: log, OpTimeout: 20 * time.Second, Indexing: ix})
	mnt := t.TempDir()
	srv, err := Mount(mnt, root, Options{Logger: log, OpTimeout: 20 * time.Second})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountWait(t, srv); f.Close(); t.Logf("log:\n%s", logs) })
	t.Cleanup(src.release) // before the unmount: nothing stays held
	arch := filepath.Join(mnt, "a.tar.gz")

	early, late := names[2], names[n-1]
	first := statAsync(filepath.Join(arch, early))
	for deadline := time.Now().Add(30 * time.Second); !src.held.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the indexing pass did not reach the gate in 30 s")
		}
	}
	select {
	case r := <-first:
		if r.err != nil || r.fi.Size() != size {
			t.Fatalf("stat of %s while the pass is held: %v, %v", early, r.fi, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("stat of %s, a member already indexed, did not answer in 10 s while the pass is held", early)
	}
	for _, name := range []string{early, names[0], names[5]} {
		got, err := os.ReadFile(filepath.Join(arch, name))
		if err != nil || !bytes.Equal(got, members[name]) {
			t.Fatalf("reading %s while the pass is held: %d bytes, %v; want its %d bytes", name, len(got), err, size)
		}
	}
	ps := ix.Passes()
	if len(ps) != 1 || ps[0].Name != "a.tar.gz" || ps[0].Err != nil || ps[0].Done <= 0 || ps[0].Done >= ps[0].Total ||
		ps[0].Total != int64(len(tgz)) || ps[0].Members < 3 {
		t.Fatalf("indexing passes while held: %+v; want a.tar.gz running, part done, at least 3 members", ps)
	}
	t.Logf("held at %d of %d bytes with %d entries indexed", ps[0].Done, ps[0].Total, ps[0].Members)

	lateC := statAsync(filepath.Join(arch, late))
	missC := statAsync(filepath.Join(arch, "early", "nope.bin"))
	time.Sleep(500 * time.Millisecond)
	select {
	case r := <-lateC:
		t.Fatalf("stat of %s, past the held pass, answered %v, %v before the pass reached it", late, r.fi, r.err)
	case r := <-missC:
		t.Fatalf("stat of a missing name answered %v, %v before the pass was complete", r.fi, r.err)
	default:
	}
	if !src.held.Load() || len(ix.Passes()) != 1 {
		t.Fatal("the pass is no longer held")
	}
	src.release()
	for what, c := range map[string]chan statResult{late: lateC, "early/nope.bin": missC} {
		select {
		case r := <-c:
			switch {
			case what == late && (r.err != nil || r.fi.Size() != size):
				t.Errorf("stat of %s after the release: %v, %v", late, r.fi, r.err)
			case what != late && !errors.Is(r.err, syscall.ENOENT):
				t.Errorf("stat of %s after the release: %v, %v; want ENOENT", what, r.fi, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("stat of %s still waiting 30 s after the pass was released", what)
		}
	}
	if got, err := os.ReadFile(filepath.Join(arch, late)); err != nil || !bytes.Equal(got, members[late]) {
		t.Errorf("reading %s after the pass: %d bytes, %v", late, len(got), err)
	}
	for _, dir := range []string{"early", "late"} {
		es, err := os.ReadDir(filepath.Join(arch, dir))
		if err != nil || len(es) != n/2 {
			t.Errorf("readdir %s after the pass: %d entries, %v; want %d", dir, len(es), err, n/2)
		}
	}
	if ps := ix.Passes(); len(ps) != 0 {
		t.Errorf("indexing passes after the pass: %+v, want none", ps)
	}
}
