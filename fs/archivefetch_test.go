package fs

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/cache/cachetest"
	"rangefs/fs/archive"

	"rangefs/fs/archive/archivetest"
)

// TestTarGzMemberReadFetchesSpanAndMember: with the index kept, reading one
// member from the middle of a tar.gz on a cache that holds nothing fetches
// at most one checkpoint span and the member, compressed, plus chunk
// rounding: the inflater's sequential reads of the compressed stream must
// not set off read-ahead past what the member needs.
func TestTarGzMemberReadFetchesSpanAndMember(t *testing.T) {
	const (
		mchunk = 1 << 20 // the default chunk, as a mount has
		span   = 4 << 20 // archive.Limits' default checkpoint span
		member = 1 << 20
		n      = 24
	)
	tgz, members := archivetest.TarGz(t, n, member, 3)
	ratio := float64(len(tgz)) / float64(n*member)
	store := map[string][]byte{}
	open := func(src *cachetest.Source) (Dir, func()) {
		f, err := cache.Open(filepath.Join(t.TempDir(), "obj"), cache.Meta{Size: int64(len(tgz)), ChunkSize: mchunk, ETag: `"v1"`, URL: "http://test/a.tar.gz"},
			src, cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		file := &memIndexFile{File: CacheFile(f, time.Time{}), saved: store}
		ctx, cancel := context.WithCancel(context.Background())
		d := ArchiveDir(file, "a.tar.gz", archive.TarGz, ArchiveOptions{OpTimeout: 20 * time.Second})
		if _, err := d.List(ctx); err != nil {
			t.Fatal(err)
		}
		return d, func() { cancel(); f.Close() }
	}
	// The indexing pass, on a first cache; its index is kept in store.
	_, done := open(cachetest.BytesSource(tgz))
	done()
	if len(store) != 1 {
		t.Fatalf("%d indexes kept after the pass, want 1", len(store))
	}
	// A fresh cache, the kept index: listing fetches nothing, the member read
	// fetches what it inflates.
	src := cachetest.BytesSource(tgz)
	d, done := open(src)
	defer done()
	if got := src.Bytes(); got != 0 {
		t.Fatalf("listing with the kept index fetched %d bytes", got)
	}
	es, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const mid = n / 2
	var mf File
	for _, e := range es {
		if e.Name == archivetest.MemberName(mid) {
			mf = e.File
		}
	}
	if mf == nil {
		t.Fatalf("member %d not listed", mid)
	}
	r, err := mf.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// In 128 KiB reads, as the kernel sends them.
	got := make([]byte, 0, member)
	buf := make([]byte, 128<<10)
	for off := int64(0); ; {
		k, err := r.ReadAt(context.Background(), buf, off)
		got = append(got, buf[:k]...)
		off += int64(k)
		if err == io.EOF || off >= member {
			break
		}
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if !bytes.Equal(got, members[mid]) {
		t.Fatalf("member %d: %d bytes read, not its content", mid, len(got))
	}
	// Read-ahead already claimed would still arrive; let it, then count.
	r.Close()
	served := waitQuiet(src)
	bound := int64(float64(span+member)*ratio) + 2*mchunk
	t.Logf("served %d bytes (%.2f MiB) for a %d-byte member of a %d-byte tar.gz (ratio %.2f); bound %.2f MiB",
		served, float64(served)/(1<<20), member, len(tgz), ratio, float64(bound)/(1<<20))
	if served > bound {
		t.Errorf("the member read fetched %d bytes, more than one checkpoint span and the member compressed plus 2 chunks (%d)", served, bound)
	}
}

// waitQuiet returns src's byte count once it has stopped changing (fetches
// already started finish), within 5 s.
func waitQuiet(src *cachetest.Source) int64 {
	last := src.Bytes()
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		now := src.Bytes()
		if now == last {
			return now
		}
		last = now
	}
	return last
}
