package cache

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkFill measures the cache data path: a fast in-memory Source
// streaming 256 MiB over 8 connections into the sparse file, with CRC,
// fdatasync and index commits. MB/s is the figure to compare with the
// network rate the downloader must sustain.
//
// write is the size of each Write the Source makes: 256 KiB is fetch's copy
// buffer filled, 16 KiB is one TLS record per Write (the worst case).
func BenchmarkFill(b *testing.B) {
	for _, write := range []int{256 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("write=%dKiB", write>>10), func(b *testing.B) { benchFill(b, write) })
	}
}

func benchFill(b *testing.B, write int) {
	const size = 256 << 20
	m := Meta{Size: size, ChunkSize: 1 << 20, ETag: `"b"`}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		dir := cacheDir(b)
		src := newFake(size)
		src.writeSize = write
		f, err := Open(dir, m, src, Options{Pool: NewPool(8)})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := f.Fill(bg); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// BenchmarkOpen100k measures Open (and Close) of a cache whose index holds
// 100k chunk records: the time before a mount can serve.
func BenchmarkOpen100k(b *testing.B) {
	const n = 100_000
	m := testMeta(n * testChunk)
	dir := cacheDir(b)
	makeIndex(b, dir, m, n)
	src := newFake(m.Size)
	for b.Loop() {
		f, err := Open(dir, m, src, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if f.Stats().Present != n {
			b.Fatal("records not loaded")
		}
		f.Close()
	}
}

// BenchmarkReadCached measures 128 KiB ReadAt calls on a fully cached,
// verified file: the per-call overhead of the hot path.
func BenchmarkReadCached(b *testing.B) {
	const size = 64 << 20
	m := Meta{Size: size, ChunkSize: 1 << 20, ETag: `"b"`}
	f := openT(b, cacheDir(b), m, newFake(size), Options{})
	if err := f.Fill(bg); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(len(buf)))
	off := int64(0)
	for b.Loop() {
		if _, err := f.ReadAt(bg, buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(buf))) % size
	}
}
