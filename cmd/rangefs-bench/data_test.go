package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"rangefs/fetch/fetchtest/content"
)

func TestEnsureDataFileAndHash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "www")
	os.MkdirAll(dir, 0o755)
	const size = 3<<20 + 123 // not a multiple of the write buffer
	d, err := ensureDataFile(dir, size, 11)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	content.Fill(want, 0, 11)
	if !bytes.Equal(raw, want) {
		t.Fatal("file content is not the pattern")
	}
	sum := sha256.Sum256(want)
	if d.sum != hex.EncodeToString(sum[:]) {
		t.Errorf("recorded sha256 %s, want %s", d.sum, hex.EncodeToString(sum[:]))
	}
	if c := fmt.Sprintf("%08x", crc32.Checksum(want, castagnoli)); d.check != c {
		t.Errorf("recorded CRC-32C %s, want %s", d.check, c)
	}
	n, got, err := readAndHash(context.Background(), d.path)
	if err != nil || n != size || got != d.check {
		t.Errorf("readAndHash = %d, %s, %v", n, got, err)
	}

	// Reused when size and seed match (mtime unchanged), regenerated when not.
	fi1, _ := os.Stat(d.path)
	d2, err := ensureDataFile(dir, size, 11)
	fi2, _ := os.Stat(d.path)
	if err != nil || d2.sum != d.sum || d2.check != d.check || !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Errorf("second call did not reuse the file: %v", err)
	}
	// A sidecar of the older format, without the CRC, is not trusted: the file is written again.
	side := filepath.Join(filepath.Dir(dir), "data.bin.sha256")
	os.WriteFile(side, []byte(fmt.Sprintf("content=2 size=%d seed=11 sha256=%s\n", size, d.sum)), 0o644)
	d4, err := ensureDataFile(dir, size, 11)
	if err != nil || d4.check != d.check || d4.sum != d.sum {
		t.Errorf("after an old sidecar: %+v, %v; want check %s", d4, err, d.check)
	}
	d3, err := ensureDataFile(dir, size, 12)
	if err != nil || d3.sum == d.sum {
		t.Errorf("a new seed must regenerate: %v", err)
	}

	// A cancelled context stops the read.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := readAndHash(ctx, d.path); err == nil {
		t.Error("readAndHash ignored a cancelled context")
	}
}

func TestRandomReadsChecksContent(t *testing.T) {
	dir := t.TempDir()
	d, err := ensureDataFile(dir, 1<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	offs := randomOffsets(50, d.size, 1)
	lat, ok, err := randomReads(context.Background(), d.path, offs, 4)
	if err != nil || !ok || len(lat) != 50 {
		t.Fatalf("randomReads = %d reads, ok %v, %v", len(lat), ok, err)
	}
	// Corrupt one page that an offset reads: the check must notice.
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, offs[10]+100)
	f.WriteAt([]byte{^b[0]}, offs[10]+100)
	f.Close()
	if _, ok, _ := randomReads(context.Background(), d.path, offs, 4); ok {
		t.Error("a corrupted page went unnoticed")
	}
}

func TestRandomOffsets(t *testing.T) {
	const size = 1<<30 + 100
	a := randomOffsets(200, size, 1)
	if !slices.Equal(a, randomOffsets(200, size, 1)) {
		t.Error("same seed, different offsets")
	}
	if slices.Equal(a, randomOffsets(200, size, 2)) {
		t.Error("different seeds, same offsets")
	}
	for _, o := range a {
		if o%4096 != 0 || o < 0 || o+4096 > size {
			t.Errorf("offset %d not a whole 4 KiB page inside the file", o)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(a)))) < 190 {
		t.Error("offsets are not spread over the file")
	}
}

func TestLocateWrong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "www")
	os.MkdirAll(dir, 0o755)
	d, err := ensureDataFile(dir, 1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := locateWrong(context.Background(), d.path, d.size, 3); got != "second read of 1048576 bytes: 0 blocks of 64 KiB differ, first at []" {
		t.Errorf("right file: %s", got)
	}
	f, _ := os.OpenFile(d.path, os.O_WRONLY, 0)
	f.WriteAt([]byte{0}, 3<<16+5)
	f.WriteAt([]byte{0, 0}, 9<<16+70)
	f.Close()
	if got := locateWrong(context.Background(), d.path, d.size, 3); got != "second read of 1048576 bytes: 2 blocks of 64 KiB differ, first at [196608 589824]" {
		t.Errorf("two flipped places: %s", got)
	}
}
