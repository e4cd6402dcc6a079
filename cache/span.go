package cache

// Chunk arithmetic. Everything in this file is pure: no I/O, no locks, no
// state beyond the two numbers that describe a file's geometry. Keeping it in
// one place means the off-by-one cases (the short last chunk, spans that end
// exactly on a boundary, reads at or past EOF) are decided once and tested in
// one table.

// layout describes how a file of Size bytes is cut into chunks of ChunkSize
// bytes. The last chunk is short when Size is not a multiple of ChunkSize.
// A layout is an immutable value.
type layout struct {
	size   int64 // file size in bytes, >= 0
	chunk  int64 // chunk size in bytes, a power of two
	chunks int64 // number of chunks, ceil(size/chunk)
}

func newLayout(size, chunk int64) layout {
	return layout{size: size, chunk: chunk, chunks: (size + chunk - 1) / chunk}
}

// chunkOf returns the index of the chunk holding byte off (off >= 0).
func (l layout) chunkOf(off int64) int64 { return off / l.chunk }

// bounds returns the byte range [start, end) of chunk i; end is clamped to the
// file size, so the last chunk may be short.
func (l layout) bounds(i int64) (start, end int64) {
	start = i * l.chunk
	end = min(start+l.chunk, l.size)
	return start, end
}

// chunkLen is the length in bytes of chunk i (ChunkSize except for the last).
func (l layout) chunkLen(i int64) int64 {
	s, e := l.bounds(i)
	return e - s
}

// clamp limits the span [off, off+n) to the file: it returns the number of
// bytes of the span that exist (0 when off >= size or n <= 0).
func (l layout) clamp(off, n int64) int64 {
	if off < 0 || n <= 0 || off >= l.size {
		return 0
	}
	return min(n, l.size-off)
}

// span returns the chunk range [first, end) touched by the bytes
// [off, off+n) after clamping at EOF. It is empty (first == end) when no byte
// of the span exists.
func (l layout) span(off, n int64) (first, end int64) {
	n = l.clamp(off, n)
	if n == 0 {
		return 0, 0
	}
	return l.chunkOf(off), l.chunkOf(off+n-1) + 1
}

// runBytes returns the byte range covered by chunks [first, end).
func (l layout) runBytes(first, end int64) (off, n int64) {
	off, _ = l.bounds(first)
	_, e := l.bounds(end - 1)
	return off, e - off
}

// blockSize is the unit of a chunk's checksums: each chunk record holds one
// CRC-32C per block (the last block of the last chunk may be short). A read
// after a restart checks only the blocks it touches, so a 4 KiB read costs a
// 64 KiB disk read, not a whole chunk. Chunk sizes are powers of two of at
// least blockSize, so blocks never straddle chunks.
const blockSize = 64 << 10

// blocks returns the number of checksum blocks of chunk i.
func (l layout) blocks(i int64) int64 {
	return (l.chunkLen(i) + blockSize - 1) / blockSize
}

// blockSpan returns the blocks [b0, b1) of chunk i (numbered from the chunk's
// start) that hold bytes of [off, end); the span is clipped to the chunk and
// is empty when they do not meet.
func (l layout) blockSpan(i, off, end int64) (b0, b1 int64) {
	s, e := l.bounds(i)
	off, end = max(off, s), min(end, e)
	if off >= end {
		return 0, 0
	}
	return (off - s) / blockSize, (end-s-1)/blockSize + 1
}

// blockBounds returns the byte range [start, end) of block b of chunk i.
func (l layout) blockBounds(i, b int64) (start, end int64) {
	s, e := l.bounds(i)
	start = s + b*blockSize
	return start, min(start+blockSize, e)
}
