package cache

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// verifyClaimed checks blocks [b0, b1) of chunk i, which the caller has
// claimed (its flight is in the map and the chunk is present but not
// verified whole), skipping blocks already checked this session, and
// resolves the flight. have, if not nil, holds the data file's bytes at
// haveOff, read while the chunk was claimed: blocks lying wholly in it are
// checked there instead of being read again. A chunk with a block whose
// bytes do not match its record is deleted from the index and the bitset,
// so it is refetched, never served. A disk that cannot be read degrades the
// File instead (the chunk's data may well be fine). It reports whether the
// blocks were good.
func (f *File) verifyClaimed(i, b0, b1 int64, have []byte, haveOff int64) bool {
	// A disk that cannot be read says nothing against the chunk: it is
	// not dropped, the File degrades instead.
	diskFailed := func(op string, err error) bool {
		f.st.degrade(&diskError{op: op, err: err})
		f.mu.Lock()
		f.tab.release(i)
		f.mu.Unlock()
		return false
	}
	rec, found, err := f.st.record(i)
	if err != nil {
		return diskFailed("read index", err)
	}
	good := found
	if good {
		f.mu.Lock()
		var todo []int64
		for b := b0; b < b1; b++ {
			if !f.tab.blocksVerified(i, b, b+1) {
				todo = append(todo, b)
			}
		}
		f.mu.Unlock()
		for _, b := range todo {
			var got uint32
			var rerr error
			if s, e := f.lay.blockBounds(i, b); have != nil && s >= haveOff && e <= haveOff+int64(len(have)) {
				got = crc32.Checksum(have[s-haveOff:e-haveOff], castagnoli)
			} else {
				got, rerr = f.st.blockCRC(i, b)
			}
			if rerr != nil {
				return diskFailed("read data", rerr)
			}
			if got != binary.BigEndian.Uint32(rec[4*b:]) {
				good = false
				break
			}
		}
	}
	if !good {
		f.log.Warn("cached chunk failed its checksum; dropping it", "dir", f.st.dir, "chunk", i)
		// Index first: from here on nothing durable claims the chunk.
		if derr := f.st.deleteRecord(i); derr != nil {
			f.st.degrade(&diskError{op: "commit index", err: derr})
		}
	}
	f.mu.Lock()
	if good {
		f.tab.pass(i, b0, b1)
	} else {
		f.tab.drop(i)
	}
	f.mu.Unlock()
	return good
}

// Verify checks the checksum of every present chunk not yet verified this
// session. Bad chunks become missing (a later read or Fill refetches them)
// and Verify returns an error wrapping ErrCorrupt with their count. It
// honours ctx between chunks. Safe for concurrent use.
func (f *File) Verify(ctx context.Context) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.sched.wg.Done()
	bad := 0
	for i := int64(0); i < f.lay.chunks; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !f.tab.present.get(i) || f.tab.verified.get(i) {
			continue
		}
		f.mu.Lock()
		fl := f.tab.flight(i)
		claim := fl == nil && f.tab.claimCheck(i)
		f.mu.Unlock()
		if fl != nil {
			// Someone else is verifying or fetching it: wait, then look
			// again at the outcome.
			select {
			case <-fl.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			i--
			continue
		}
		if claim && !f.verifyClaimed(i, 0, f.lay.blocks(i), nil, 0) {
			if f.st.degraded() && f.tab.present.get(i) {
				return fmt.Errorf("cache: verify chunk %d: %w", i, f.st.uncached())
			}
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d chunks of %s failed their checksum and were dropped", ErrCorrupt, bad, f.st.dir)
	}
	return nil
}
