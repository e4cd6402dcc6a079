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
		src.WriteSize = write
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
	// 64 KiB chunks hold one checksum block each, 1 MiB chunks (the
	// default) sixteen: a record of 64 bytes.
	for _, chunk := range []int64{testChunk, 1 << 20} {
		b.Run(fmt.Sprintf("chunk=%dKiB", chunk>>10), func(b *testing.B) {
			m := testMeta(n * chunk)
			m.ChunkSize = chunk
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
		})
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

// BenchmarkReaderCapped measures a cold sequential read of 64 MiB through a
// Reader in 1 MiB reads (as the kernel sends them) from a source capping
// each connection at 25 MB/s, over a Pool of 8: read-ahead alone (no
// prefetch) must keep all 8 connections busy to approach 200 MB/s.
func BenchmarkReaderCapped(b *testing.B) {
	const size = 64 << 20
	m := Meta{Size: size, ChunkSize: 1 << 20, ETag: `"b"`}
	b.SetBytes(size)
	buf := make([]byte, 1<<20)
	for b.Loop() {
		b.StopTimer()
		dir := cacheDir(b)
		// Every Fetch paced to 25 MB/s, in 256 KiB writes.
		src := newFake(size)
		src.WriteSize, src.Rate = 256<<10, 25_000_000
		f, err := Open(dir, m, src, Options{Pool: NewPool(8)})
		if err != nil {
			b.Fatal(err)
		}
		r := f.NewReader()
		b.StartTimer()
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := r.ReadAt(bg, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// BenchmarkReadUnverified measures the first sequential pass over a fully
// cached file after a restart, through a Reader in 128 KiB reads (the
// kernel's usual size): every block is checked against its CRC on the way,
// so this is the warm sequential read of a remount.
func BenchmarkReadUnverified(b *testing.B) {
	const size = 64 << 20
	m := Meta{Size: size, ChunkSize: 1 << 20, ETag: `"b"`}
	dir := cacheDir(b)
	f, err := Open(dir, m, newFake(size), Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Fill(bg); err != nil {
		b.Fatal(err)
	}
	f.Close()
	buf := make([]byte, 128<<10)
	b.SetBytes(size)
	for b.Loop() {
		b.StopTimer()
		f, err := Open(dir, m, newFake(size), Options{})
		if err != nil {
			b.Fatal(err)
		}
		r := f.NewReader()
		b.StartTimer()
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := r.ReadAt(bg, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if st := f.Stats(); st.Verified != st.Chunks {
			b.Fatalf("after a full pass: %+v", st)
		}
		f.Close()
		b.StartTimer()
	}
}
