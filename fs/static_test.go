package fs

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/cache/cachetest"
)

// Closing a file handle's reader closes the cache.Reader under it, so the
// read-ahead and fetches it drove stop with the handle (the kernel's
// Release of the handle calls Close).
func TestCacheReaderCloseClosesItsCacheReader(t *testing.T) {
	b := bytes.Repeat([]byte("rangefs "), 4*chunk/8)
	f, err := cache.Open(t.TempDir(), cache.Meta{Size: int64(len(b)), ChunkSize: chunk, ETag: `"v1"`, URL: "http://test/f"},
		cachetest.BytesSource(b), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := CacheFile(f, time.Time{}).Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := r.ReadAt(context.Background(), buf, 0); err != nil || !bytes.Equal(buf, b[:4096]) {
		t.Fatalf("read before Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(context.Background(), buf, 0); !errors.Is(err, cache.ErrClosed) {
		t.Fatalf("read after Close: %v, want the cache.Reader closed (cache.ErrClosed)", err)
	}
}
