package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
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
	path  string
	name  string // base name: what the mounts show and the URL path ends in
	size  int64
	sum   string // hex sha256: the file's identity, logged with each run
	check string // hex CRC-32C: what each timed read is checked against
}

// ensureDataFile writes the test file of size bytes into dir, or reuses one a previous
// run left there (checked against its recorded size, seed, sha256 and CRC-32C in a sidecar).
func ensureDataFile(dir string, size int64, seed uint64) (dataFile, error) {
	name := "data.bin"
	d := dataFile{path: filepath.Join(dir, name), name: name, size: size}
	// The sidecar sits beside the served directory, not in it: rclone and httpdirfs mount
	// the directory listing and must see exactly one file.
	side := filepath.Join(filepath.Dir(dir), name+".sha256")
	// "content=2": the generator changed once (to package content's); a file a run
	// made before that, or a sidecar without the CRC, has another line and is written again.
	want := fmt.Sprintf("content=2 size=%d seed=%d ", size, seed)
	if b, err := os.ReadFile(side); err == nil && strings.HasPrefix(string(b), want) {
		_, err := fmt.Sscanf(strings.TrimPrefix(string(b), want), "sha256=%s crc32c=%s", &d.sum, &d.check)
		if fi, serr := os.Stat(d.path); err == nil && serr == nil && fi.Size() == size {
			return d, nil
		}
	}
	f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return d, err
	}
	h, c := sha256.New(), crc32.New(castagnoli)
	buf := make([]byte, 1<<20)
	w := io.MultiWriter(f, h, c)
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
	d.sum, d.check = hex.EncodeToString(h.Sum(nil)), hex.EncodeToString(c.Sum(nil))
	return d, os.WriteFile(side, []byte(want+"sha256="+d.sum+" crc32c="+d.check+"\n"), 0o644)
}

// castagnoli is the CRC-32C table; the CPU computes it (SSE4.2 on amd64, CRC on arm64)
// at many GB/s, so checking a timed read costs its reader almost nothing. sha256 would not
// do: near 1.3 GB/s on the bench machine, it took a core from the mount it measured
// (get's output is hashed after its clock stops) and capped the local-disk row.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readBufSize is the size of each read(2) of a sequential read: like `dd bs=1M`.
const readBufSize = 1 << 20

// readAndHash reads path from start to EOF with 1 MiB reads and returns the byte count
// and hex CRC-32C, to compare with dataFile.check. The CRC runs in a second goroutine on a
// ring of four buffers so it overlaps the reads instead of adding to them. ctx is checked
// between reads; a read stuck in the kernel is ended by the caller killing the mount daemon.
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
		h := crc32.New(castagnoli)
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
