package content

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
)

func TestReaderReadAt(t *testing.T) {
	const size = 1000
	p := New(size, 42)
	whole := make([]byte, size)
	if n, err := p.ReadAt(whole, 0); n != size || err != nil {
		t.Fatalf("ReadAt whole = %d, %v", n, err)
	}
	// Any offset and length agrees with the whole read (aligned or not).
	for off := 0; off < 40; off++ {
		for n := 0; n < 40; n++ {
			b := make([]byte, n)
			m, err := p.ReadAt(b, int64(off))
			if m != n || err != nil || !bytes.Equal(b, whole[off:off+n]) {
				t.Fatalf("ReadAt(%d bytes at %d) = %d, %v, mismatch %v", n, off, m, err, !bytes.Equal(b, whole[off:off+n]))
			}
		}
	}
	// Reads past the end are short with io.EOF.
	b := make([]byte, 10)
	if n, err := p.ReadAt(b, size-3); n != 3 || err != io.EOF || !bytes.Equal(b[:3], whole[size-3:]) {
		t.Fatalf("ReadAt across the end = %d, %v", n, err)
	}
	if n, err := p.ReadAt(b, size); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end = %d, %v", n, err)
	}
	if _, err := p.ReadAt(b, -1); err == nil {
		t.Fatal("ReadAt at -1 succeeded")
	}
	// Another seed is other content; the same seed is the same content.
	if bytes.Equal(New(size, 43).Bytes(0, size), whole) || !bytes.Equal(New(size, 42).Bytes(0, size), whole) {
		t.Fatal("seed does not determine content")
	}
	sum := sha256.Sum256(whole)
	if got := SHA256(size, 42); got != hex.EncodeToString(sum[:]) || p.SHA256() != got {
		t.Fatalf("SHA256 = %s, want %x", got, sum)
	}
}

func TestFillIsPositional(t *testing.T) {
	whole := make([]byte, 10000)
	Fill(whole, 0, 5)
	// Any sub-span filled on its own, at any alignment, equals the same span of the whole.
	for _, span := range [][2]int{{0, 1}, {1, 7}, {3, 8}, {7, 9}, {8, 16}, {13, 4096}, {4095, 4097}, {9991, 9}} {
		off, n := span[0], span[1]
		part := make([]byte, n)
		Fill(part, int64(off), 5)
		if !bytes.Equal(part, whole[off:off+n]) {
			t.Errorf("span at %d len %d differs from the whole-file pattern", off, n)
		}
	}
	other := make([]byte, 64)
	Fill(other, 0, 6)
	if bytes.Equal(other, whole[:64]) {
		t.Error("different seeds gave the same content")
	}
	if bytes.Count(whole, []byte{0}) > len(whole)/64 {
		t.Error("pattern is suspiciously full of zeros")
	}
}
