// Package content is the one generator of test-file content in this module: deterministic
// pseudo-random bytes that are a pure function of (seed, offset). The fetchtest range
// server, the fake Sources of the cache and fs tests, rangefs-testserver and rangefs-bench
// all serve or write it, so any of them can check any byte without keeping a copy.
//
// The 8-byte word at index i is splitmix64 of (seed, i), little-endian: nothing repeats or
// compresses, a shifted, zero-filled or mixed-version read never matches by accident, and
// different seeds give unrelated content (a "new version" of the same size).
//
// It imports the standard library only, so that every layer's tests may use it without
// crossing the package arrows (cache and fs tests must not link fetch).
package content

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
)

var errNegativeOffset = errors.New("content: negative offset")

// word is splitmix64 of the word index mixed with the seed: fast, and good enough that
// shifted or mixed-version data never matches by accident.
func word(seed, i uint64) uint64 {
	z := seed + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Fill writes the content of [off, off+len(p)) for seed into p. off must be >= 0. It
// allocates nothing, so it suits writing large files through a fixed buffer.
func Fill(p []byte, off int64, seed uint64) {
	wi := uint64(off) / 8
	if skip := int(off % 8); skip != 0 {
		var tmp [8]byte
		binary.LittleEndian.PutUint64(tmp[:], word(seed, wi))
		c := copy(p, tmp[skip:])
		p = p[c:]
		wi++
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, word(seed, wi))
		p = p[8:]
		wi++
	}
	if len(p) > 0 {
		var tmp [8]byte
		binary.LittleEndian.PutUint64(tmp[:], word(seed, wi))
		copy(p, tmp[:])
	}
}

// Bytes returns the content of [off, off+n) for seed, whatever the size of a file
// (for comparisons in tests).
func Bytes(off, n int64, seed uint64) []byte {
	b := make([]byte, n)
	Fill(b, off, seed)
	return b
}

// Reader is the content of one file of a given size, computed on demand: reading costs no
// memory and any offset is as cheap as any other. Immutable; safe for concurrent use.
type Reader struct {
	size int64
	seed uint64
}

// New returns the Reader of size bytes for seed (a negative size is 0).
func New(size int64, seed uint64) *Reader {
	if size < 0 {
		size = 0
	}
	return &Reader{size: size, seed: seed}
}

// Size is the content length.
func (r *Reader) Size() int64 { return r.size }

// Seed is the seed the content was made from.
func (r *Reader) Seed() uint64 { return r.seed }

// ReadAt implements io.ReaderAt.
func (r *Reader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if off >= r.size {
		return 0, io.EOF
	}
	var err error
	if rest := r.size - off; int64(len(b)) > rest {
		b, err = b[:rest], io.EOF
	}
	Fill(b, off, r.seed)
	return len(b), err
}

// Bytes returns the content of [off, off+n), cut at the end of the file.
func (r *Reader) Bytes(off, n int64) []byte {
	b := make([]byte, n)
	m, _ := r.ReadAt(b, off)
	return b[:m]
}

// SHA256 returns the hex sha256 of the whole content, streamed through a fixed buffer.
func (r *Reader) SHA256() string { return SHA256(r.size, r.seed) }

// SHA256 is the hex sha256 of New(size, seed).
func SHA256(size int64, seed uint64) string {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(New(size, seed), 0, size)); err != nil {
		panic(err) // a Reader never fails inside its size
	}
	return hex.EncodeToString(h.Sum(nil))
}
