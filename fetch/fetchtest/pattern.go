package fetchtest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
)

var errNegativeOffset = errors.New("fetchtest: negative offset")

// PatternReader is deterministic pseudo-random content of any size, computed on demand: the
// 8-byte block at index i is a hash of (seed, i), so reading costs no memory and any offset
// is as cheap as any other. Different seeds give unrelated content (a "new version" of the
// same size). Immutable; safe for concurrent use.
type PatternReader struct {
	size int64
	seed uint64
}

// Pattern returns a PatternReader of size bytes for seed.
func Pattern(size int64, seed uint64) *PatternReader {
	if size < 0 {
		size = 0
	}
	return &PatternReader{size: size, seed: seed}
}

// Size is the content length.
func (p *PatternReader) Size() int64 { return p.size }

// block is splitmix64 of the block index mixed with the seed: fast, and good enough that
// shifted or mixed-version data never matches by accident.
func (p *PatternReader) block(i uint64) uint64 {
	z := p.seed + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// ReadAt implements io.ReaderAt.
func (p *PatternReader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if off >= p.size {
		return 0, io.EOF
	}
	var err error
	if rest := p.size - off; int64(len(b)) > rest {
		b, err = b[:rest], io.EOF
	}
	n := len(b)
	// Unaligned head.
	bi := uint64(off) / 8
	if skip := int(off % 8); skip != 0 {
		var tmp [8]byte
		binary.LittleEndian.PutUint64(tmp[:], p.block(bi))
		c := copy(b, tmp[skip:])
		b = b[c:]
		bi++
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, p.block(bi))
		b = b[8:]
		bi++
	}
	if len(b) > 0 {
		var tmp [8]byte
		binary.LittleEndian.PutUint64(tmp[:], p.block(bi))
		copy(b, tmp[:])
	}
	return n, err
}

// Bytes returns the content of [off, off+n) (for comparisons in tests of small ranges).
func (p *PatternReader) Bytes(off, n int64) []byte {
	b := make([]byte, n)
	m, _ := p.ReadAt(b, off)
	return b[:m]
}

// SHA256 returns the hex sha256 of the whole content, streamed through a fixed buffer.
func (p *PatternReader) SHA256() string { return PatternSHA256(p.size, p.seed) }

// PatternSHA256 is the hex sha256 of Pattern(size, seed).
func PatternSHA256(size int64, seed uint64) string {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(Pattern(size, seed), 0, size)); err != nil {
		panic(err) // PatternReader never fails inside its size
	}
	return hex.EncodeToString(h.Sum(nil))
}
