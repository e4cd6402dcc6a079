package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"rangefs/fetch/fetchtest/content"
)

// The test file's content is package content's (seed, offset) function: nothing about it
// compresses, every byte is written (no holes), and a random read can be checked without
// reading the original file.

// dataFile is the generated test file.
type dataFile struct {
	path string
	name string // base name: what the mounts show and the URL path ends in
	size int64
	sum  string // hex sha256
}

// ensureDataFile writes the test file of size bytes into dir, or reuses one a previous
// run left there (checked against its recorded size, seed and sha256 in a sidecar).
func ensureDataFile(dir string, size int64, seed uint64) (dataFile, error) {
	name := "data.bin"
	d := dataFile{path: filepath.Join(dir, name), name: name, size: size}
	// The sidecar sits beside the served directory, not in it: rclone and httpdirfs mount
	// the directory listing and must see exactly one file.
	side := filepath.Join(filepath.Dir(dir), name+".sha256")
	// "content=2": the generator changed once (to package content's); a file a run
	// made before that has another sidecar line and is written again.
	want := fmt.Sprintf("content=2 size=%d seed=%d sha256=", size, seed)
	if b, err := os.ReadFile(side); err == nil && strings.HasPrefix(string(b), want) {
		if fi, err := os.Stat(d.path); err == nil && fi.Size() == size {
			d.sum = strings.TrimSpace(strings.TrimPrefix(string(b), want))
			return d, nil
		}
	}
	f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return d, err
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	w := io.MultiWriter(f, h)
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		content.Fill(buf[:n], off, seed)
		if _, err := w.Write(buf[:n]); err != nil {
			f.Close()
			return d, err
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return d, err
	}
	if err := f.Close(); err != nil {
		return d, err
	}
	d.sum = hex.EncodeToString(h.Sum(nil))
	return d, os.WriteFile(side, []byte(want+d.sum+"\n"), 0o644)
}

// readBufSize is the size of each read(2) of a sequential read: like `dd bs=1M`.
const readBufSize = 1 << 20

// readAndHash reads path from start to EOF with 1 MiB reads and returns the byte count
// and hex sha256. Hashing runs in a second goroutine on a ring of four buffers so it
// overlaps the reads instead of adding to them (sha256 here runs near 1.4 GB/s, slower
// than a page-cache read). ctx is checked between reads; a read stuck in the kernel is
// ended by the caller killing the mount daemon.
func readAndHash(ctx context.Context, path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	free := make(chan []byte, 4)
	for i := 0; i < 4; i++ {
		free <- make([]byte, readBufSize)
	}
	full := make(chan []byte, 4)
	sumc := make(chan []byte, 1)
	go func() {
		h := sha256.New()
		for b := range full {
			h.Write(b)
			free <- b[:cap(b)]
		}
		sumc <- h.Sum(nil)
	}()
	var total int64
	var rerr error
	for {
		if err := ctx.Err(); err != nil {
			rerr = err
			break
		}
		b := <-free
		n, err := io.ReadFull(f, b)
		total += int64(n)
		if n > 0 {
			full <- b[:n]
		} else {
			free <- b
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(full)
	sum := <-sumc
	return total, hex.EncodeToString(sum), rerr
}

// hashFile is readAndHash without a context, for downloaded outputs.
func hashFile(path string) (int64, string, error) {
	return readAndHash(context.Background(), path)
}

// randomOffsets returns n 4 KiB-aligned offsets in [0, size-4096], the same for a given
// seed on every run, so each tool reads the same places.
func randomOffsets(n int, size int64, seed uint64) []int64 {
	r := rand.New(rand.NewPCG(seed, 0x72616e6765667321))
	pages := size / 4096
	out := make([]int64, n)
	for i := range out {
		out[i] = r.Int64N(pages) * 4096
	}
	return out
}
