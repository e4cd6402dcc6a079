package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/fetch"
	"rangefs/fetch/fetchtest"
	"rangefs/fetch/listing"
)

// newTestTree is a treeCtx over a fetchtest server holding n pattern files,
// with an objects table that keeps at most maxIdle idle caches for idle.
func newTestTree(t *testing.T, n int, maxIdle int, idle time.Duration) (*treeCtx, []*treeFile, []*fetchtest.PatternReader, *fetchtest.Server) {
	t.Helper()
	const size = 300 << 10
	srv := fetchtest.NewServer(fetchtest.Pattern(size, 1), size)
	t.Cleanup(srv.Close)
	c := &mountConfig{commonConfig: commonConfig{Connections: 4, ChunkSize: 64 << 10}, CacheDir: t.TempDir()}
	log := slog.New(slog.DiscardHandler)
	client := fetch.NewClient(fetch.Options{Connections: 4})
	t.Cleanup(client.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tc := &treeCtx{c: c, client: client, log: log, ctx: ctx, probes: make(chan struct{}, 4),
		objects: newObjects(c, cache.NewPool(4), log)}
	tc.objects.maxIdle, tc.objects.idleTime = maxIdle, idle
	t.Cleanup(tc.objects.close)
	var files []*treeFile
	var pats []*fetchtest.PatternReader
	for i := range n {
		p := fetchtest.Pattern(size, uint64(i+10))
		path := fmt.Sprintf("/f%d.bin", i)
		srv.AddFile(path, p, size)
		files = append(files, &treeFile{e: listing.Entry{Name: path[1:], URL: srv.URLFor(path), Size: size, SizeExact: true}, t: tc})
		pats = append(pats, p)
	}
	return tc, files, pats, srv
}

// Many readers opening, reading and closing a few files at once, with idle
// caches closed behind them: every byte is right, and nothing stays open.
func TestObjectsConcurrentOpensAndIdleClose(t *testing.T) {
	tc, files, pats, _ := newTestTree(t, 6, 2, 5*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			buf := make([]byte, 8<<10)
			for range 40 {
				i := rng.IntN(len(files))
				r, err := files[i].Open(context.Background())
				if err != nil {
					errs <- err
					return
				}
				off := rng.Int64N(pats[i].Size() - int64(len(buf)))
				n, err := r.ReadAt(context.Background(), buf, off)
				if err != nil || !bytes.Equal(buf[:n], pats[i].Bytes(off, int64(n))) || n != len(buf) {
					errs <- fmt.Errorf("file %d at %d: %d bytes, %v, right: %v", i, off, n, err, bytes.Equal(buf[:n], pats[i].Bytes(off, int64(n))))
				}
				r.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for tc.objects.openCount() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := tc.objects.openCount(); n != 0 {
		t.Errorf("%d caches still open after every reader closed and the idle time passed", n)
	}
}

// Opening a file in a new version closes the old version's cache: its
// reader then fails with ESTALE, while the new reader reads the new bytes.
func TestObjectsNewVersionSupersedesOld(t *testing.T) {
	tc, files, pats, srv := newTestTree(t, 1, 4, time.Minute)
	old, err := files[0].Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	buf := make([]byte, 4096)
	if _, err := old.ReadAt(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	v2 := fetchtest.Pattern(pats[0].Size(), 99)
	srv.SetContent("/f0.bin", v2, v2.Size())
	// A refreshed listing makes a new treeFile for the new version.
	f2 := &treeFile{e: files[0].e, t: tc}
	f2.e.ETag = "changed"
	r2, err := f2.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if _, err := r2.ReadAt(context.Background(), buf, 8192); err != nil || !bytes.Equal(buf, v2.Bytes(8192, 4096)) {
		t.Fatalf("the new version's reader: %v (right bytes: %v)", err, bytes.Equal(buf, v2.Bytes(8192, 4096)))
	}
	if _, err := old.ReadAt(context.Background(), buf, 0); !errors.Is(err, cache.ErrStale) {
		t.Fatalf("the old version's reader after the new one opened: %v, want ErrStale", err)
	}
	if n := tc.objects.openCount(); n != 1 {
		t.Errorf("%d caches open, want 1", n)
	}
}
