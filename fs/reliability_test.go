package fs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"rangefs/cache"
	"rangefs/cache/cachetest"
)

// After the remote changes, reads of the handle fail with ESTALE, cached or
// not: the handle never mixes two versions.
func TestRemoteChangeIsESTALE(t *testing.T) {
	src := newSource(50 * chunk)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping a real mount: /dev/fuse is not available here (%v)", err)
	}
	f, err := cache.Open(t.TempDir(), cache.Meta{Size: src.Size(), ChunkSize: chunk, ETag: `"v1"`}, src, cache.Options{ReadAheadMax: chunk})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv, err := Mount(dir, Static([]Entry{{Name: "f", File: CacheFile(f, time.Time{})}}, time.Time{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		srv.Unmount()
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop within 10 s of unmount")
		}
	})
	h, err := os.Open(dir + "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	buf := make([]byte, 4096)
	if _, err := h.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	src.Set(func(s *cachetest.Source) { s.Changed = true })
	if _, err := h.ReadAt(buf, 40*chunk); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("uncached read after a remote change: %v, want ESTALE", err)
	}
}

// A thousand concurrent preads on one descriptor, at random offsets, all get
// the right bytes: nothing in the adapter serialises or mixes them up.
func TestThousandConcurrentPreads(t *testing.T) {
	src := newSource(64 << 20)
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{Pool: cache.NewPool(8)})
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	var bad sync.Map
	for g := range 1000 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 99))
			off := r.Int64N(src.Size() - 4096)
			buf := make([]byte, 4096)
			n, err := f.ReadAt(buf, off)
			if err != nil || n != 4096 || !bytes.Equal(buf, pattern(off, 4096)) {
				bad.Store(off, err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("1000 concurrent preads did not finish within a minute")
	}
	bad.Range(func(k, v any) bool {
		t.Errorf("pread at %d: wrong bytes or error %v", k, v)
		return false
	})
}

// A completely cached and verified file is handed to the kernel (FUSE
// passthrough) when the kernel allows it; either way the bytes are right.
func TestPassthroughForVerifiedFile(t *testing.T) {
	src := newSource(40*chunk + 3)
	m := mountPattern(t, src, t.TempDir(), Options{Passthrough: true}, cache.Options{})
	m.file.StartPrefetch()
	waitComplete(t, m.file, 30*time.Second)
	if !m.file.AllVerified() {
		t.Fatal("a file fetched this session is not all verified")
	}
	before := m.srv.reads.Load()
	got, err := os.ReadFile(m.path)
	if err != nil || sum(got) != sum(pattern(0, src.Size())) {
		t.Fatalf("read of a passthrough file: %v", err)
	}
	if m.srv.server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 || os.Geteuid() != 0 {
		t.Logf("kernel passthrough not available here; reads were served by the daemon")
		return
	}
	if n := m.srv.reads.Load() - before; n != 0 {
		t.Errorf("with passthrough the daemon still served %d reads", n)
	}
}

// stat, ls, df and getxattr are answered from memory: with the server
// silent they still answer, and no fetch is started.
func TestMetadataNeverTouchesNetwork(t *testing.T) {
	src := newSource(30 * chunk)
	src.Hold(make(chan struct{})) // the server never answers
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: time.Minute}, cache.Options{})
	if _, err := os.Stat(m.path); err != nil {
		t.Errorf("stat: %v", err)
	}
	if ents, err := os.ReadDir(m.dir); err != nil || len(ents) != 1 {
		t.Errorf("readdir: %v %v", ents, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.dir, &st); err != nil || st.Blocks == 0 {
		t.Errorf("statfs: %+v %v", st, err)
	}
	if _, err := syscall.Getxattr(m.path, "user.rangefs.chunks", make([]byte, 64)); err != nil {
		t.Errorf("getxattr: %v", err)
	}
	f, err := os.Open(m.path)
	if err != nil {
		t.Errorf("open: %v", err)
	} else {
		f.Close()
	}
	if n := src.NCalls(); n != 0 {
		t.Errorf("metadata operations started %d fetches", n)
	}
}

// --allow-other brings default_permissions with it, so the file modes still
// decide who may read.
func TestAllowOtherImpliesDefaultPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: allow_other needs root (or user_allow_other in /etc/fuse.conf)")
	}
	src := newSource(chunk)
	m := mountPattern(t, src, t.TempDir(), Options{AllowOther: true}, cache.Options{})
	e, ok := MountedAt(m.dir)
	if !ok {
		t.Fatalf("mount %s not in mountinfo", m.dir)
	}
	if opts := e.Options + "," + e.SuperOpts; !strings.Contains(opts, "default_permissions") || !strings.Contains(opts, "allow_other") {
		t.Errorf("mount options lack allow_other or default_permissions: %s", opts)
	}
}
