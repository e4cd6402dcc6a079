package cache

import "testing"

func TestLayoutChunks(t *testing.T) {
	const K = 64 << 10
	tests := []struct {
		size, chunk, want int64
	}{
		{0, K, 0},
		{1, K, 1},
		{K - 1, K, 1},
		{K, K, 1},
		{K + 1, K, 2},
		{10 * K, K, 10},
		{10*K + 5, K, 11},
	}
	for _, tc := range tests {
		if got := newLayout(tc.size, tc.chunk).chunks; got != tc.want {
			t.Errorf("newLayout(%d,%d).chunks = %d, want %d", tc.size, tc.chunk, got, tc.want)
		}
	}
}

func TestLayoutBounds(t *testing.T) {
	const K = 64 << 10
	tests := []struct {
		name           string
		size           int64
		i              int64
		start, end, ln int64
	}{
		{"first of many", 3 * K, 0, 0, K, K},
		{"middle", 3 * K, 1, K, 2 * K, K},
		{"last full", 3 * K, 2, 2 * K, 3 * K, K},
		{"short last", 2*K + 100, 2, 2 * K, 2*K + 100, 100},
		{"file smaller than a chunk", 100, 0, 0, 100, 100},
		{"one byte file", 1, 0, 0, 1, 1},
	}
	for _, tc := range tests {
		l := newLayout(tc.size, K)
		s, e := l.bounds(tc.i)
		if s != tc.start || e != tc.end || l.chunkLen(tc.i) != tc.ln {
			t.Errorf("%s: bounds(%d) = [%d,%d) len %d, want [%d,%d) len %d",
				tc.name, tc.i, s, e, l.chunkLen(tc.i), tc.start, tc.end, tc.ln)
		}
	}
}

func TestLayoutSpan(t *testing.T) {
	const K = 64 << 10
	tests := []struct {
		name        string
		size        int64
		off, n      int64
		first, end  int64
		clamped     int64
		chunkOfWant int64
	}{
		{"offset 0, one byte", 10 * K, 0, 1, 0, 1, 1, 0},
		{"offset 0, whole chunk", 10 * K, 0, K, 0, 1, K, 0},
		{"whole chunk plus one byte", 10 * K, 0, K + 1, 0, 2, K + 1, 0},
		{"last byte of chunk 0", 10 * K, K - 1, 1, 0, 1, 1, 0},
		{"straddles boundary", 10 * K, K - 1, 2, 0, 2, 2, 0},
		{"starts on boundary", 10 * K, K, K, 1, 2, K, 1},
		{"unaligned multi-chunk", 10 * K, K + 10, 3 * K, 1, 5, 3 * K, 1},
		{"whole file", 10 * K, 0, 10 * K, 0, 10, 10 * K, 0},
		{"past EOF clamped", 10 * K, 9 * K, 5 * K, 9, 10, K, 9},
		{"file smaller than chunk", 100, 0, 4096, 0, 1, 100, 0},
		{"file smaller than chunk, unaligned", 100, 50, 4096, 0, 1, 50, 0},
		{"short last chunk", 2*K + 100, 2*K + 10, 1000, 2, 3, 90, 2},
		{"last byte of file", 2*K + 100, 2*K + 99, 1, 2, 3, 1, 2},
		{"zero length", 10 * K, 5, 0, 0, 0, 0, 0},
		{"negative length", 10 * K, 5, -1, 0, 0, 0, 0},
		{"off == size", 10 * K, 10 * K, 10, 0, 0, 0, 10},
		{"off > size", 10 * K, 11 * K, 10, 0, 0, 0, 11},
		{"empty file", 0, 0, 10, 0, 0, 0, 0},
	}
	for _, tc := range tests {
		l := newLayout(tc.size, K)
		f, e := l.span(tc.off, tc.n)
		if f != tc.first || e != tc.end {
			t.Errorf("%s: span(%d,%d) = [%d,%d), want [%d,%d)", tc.name, tc.off, tc.n, f, e, tc.first, tc.end)
		}
		if got := l.clamp(tc.off, tc.n); got != tc.clamped {
			t.Errorf("%s: clamp(%d,%d) = %d, want %d", tc.name, tc.off, tc.n, got, tc.clamped)
		}
		if got := l.chunkOf(tc.off); got != tc.chunkOfWant {
			t.Errorf("%s: chunkOf(%d) = %d, want %d", tc.name, tc.off, got, tc.chunkOfWant)
		}
	}
}

func TestLayoutRunBytes(t *testing.T) {
	const K = 64 << 10
	l := newLayout(4*K+7, K)
	tests := []struct {
		first, end int64
		off, n     int64
	}{
		{0, 1, 0, K},
		{0, 4, 0, 4 * K},
		{1, 3, K, 2 * K},
		{3, 5, 3 * K, K + 7},
		{4, 5, 4 * K, 7},
		{0, 5, 0, 4*K + 7},
	}
	for _, tc := range tests {
		off, n := l.runBytes(tc.first, tc.end)
		if off != tc.off || n != tc.n {
			t.Errorf("runBytes(%d,%d) = (%d,%d), want (%d,%d)", tc.first, tc.end, off, n, tc.off, tc.n)
		}
	}
}

func TestLayoutBlocks(t *testing.T) {
	const B = blockSize
	const C = 4 * B             // a chunk of four blocks
	size := int64(2*C + B + 10) // last chunk: one full block and a 10-byte one
	l := newLayout(size, C)
	for _, tc := range []struct{ i, want int64 }{{0, 4}, {1, 4}, {2, 2}} {
		if got := l.blocks(tc.i); got != tc.want {
			t.Errorf("blocks(%d) = %d, want %d", tc.i, got, tc.want)
		}
	}
	if s, e := l.blockBounds(2, 1); s != 2*C+B || e != size {
		t.Errorf("blockBounds(2,1) = [%d,%d), want [%d,%d)", s, e, 2*C+B, size)
	}
	if s, e := l.blockBounds(1, 3); s != C+3*B || e != 2*C {
		t.Errorf("blockBounds(1,3) = [%d,%d), want [%d,%d)", s, e, C+3*B, 2*C)
	}
	tests := []struct {
		name        string
		i, off, end int64
		b0, b1      int64
	}{
		{"first byte", 0, 0, 1, 0, 1},
		{"whole chunk", 0, 0, C, 0, 4},
		{"4 KiB inside block 2", 0, 2*B + 100, 2*B + 4196, 2, 3},
		{"ends on a block boundary", 0, B, 2 * B, 1, 2},
		{"crosses a block boundary", 0, 2*B - 1, 2*B + 1, 1, 3},
		{"starts before the chunk", 1, C - 10, C + 10, 0, 1},
		{"ends after the chunk", 0, C - 1, C + 100, 3, 4},
		{"short last block", 2, size - 3, size, 1, 2},
		{"span before the chunk", 1, 0, 10, 0, 0},
		{"span after the chunk", 0, C, C + 5, 0, 0},
	}
	for _, tc := range tests {
		if b0, b1 := l.blockSpan(tc.i, tc.off, tc.end); b0 != tc.b0 || b1 != tc.b1 {
			t.Errorf("%s: blockSpan(%d, %d, %d) = [%d,%d), want [%d,%d)", tc.name, tc.i, tc.off, tc.end, b0, b1, tc.b0, tc.b1)
		}
	}
}
