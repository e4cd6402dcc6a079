package cache

import (
	"math/bits"
	"sync/atomic"
)

// bitset is a fixed-size set of chunk indexes. Reads are lock-free (atomic
// loads) so the hot read path can test presence without taking the File's
// mutex; writers hold the File's mutex, which orders a bit flip with the
// in-flight map. Memory is one bit per chunk.
type bitset []atomic.Uint64

func newBitset(n int64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) get(i int64) bool { return b[i>>6].Load()&(1<<(uint(i)&63)) != 0 }
func (b bitset) set(i int64)      { b[i>>6].Or(1 << (uint(i) & 63)) }
func (b bitset) clear(i int64)    { b[i>>6].And(^uint64(1 << (uint(i) & 63))) }

// nextClear returns the smallest index >= i and < n whose bit is clear, or n.
// It skips whole words, so scanning a mostly-present file is cheap.
func (b bitset) nextClear(i, n int64) int64 {
	for i < n {
		w := ^b[i>>6].Load() >> (uint(i) & 63)
		if w != 0 {
			return min(i+int64(bits.TrailingZeros64(w)), n)
		}
		i = (i | 63) + 1
	}
	return n
}

// count returns the number of set bits below n.
func (b bitset) count(n int64) int64 {
	var c int64
	for i := range b {
		w := b[i].Load()
		if end := int64(i+1) * 64; end > n {
			w &= (1 << (uint(n) & 63)) - 1
		}
		c += int64(bits.OnesCount64(w))
	}
	return c
}

// Block marks are plain (not atomic) bit slices, one bit per block of a
// chunk, guarded by the chunk table's lock (see chunkTable.partial and
// chunkTable.blocks).

// markRange sets bits [b0, b1) of marks.
func markRange(marks []uint64, b0, b1 int64) {
	for b := b0; b < b1; b++ {
		marks[b/64] |= 1 << (b % 64)
	}
}

// allMarked reports whether bits [b0, b1) of marks are all set; a nil marks
// has none set.
func allMarked(marks []uint64, b0, b1 int64) bool {
	if marks == nil {
		return false
	}
	for b := b0; b < b1; b++ {
		if marks[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}
