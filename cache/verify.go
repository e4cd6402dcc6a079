package cache

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// verifyBufSize is the piece size for checksumming a chunk from disk; one
// buffer per concurrent verification, independent of chunk and file size.
const verifyBufSize = 256 << 10

var verifyBufs = sync.Pool{New: func() any { b := make([]byte, verifyBufSize); return &b }}

// storedCRC returns the checksum recorded for chunk i.
func (f *File) storedCRC(i int64) (crc uint32, found bool, err error) {
	err = f.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketChunks).Get(chunkKey(i))
		if len(v) == 4 {
			crc, found = binary.BigEndian.Uint32(v), true
		}
		return nil
	})
	return crc, found, err
}

// crcOf computes the CRC-32C of chunk i as it is in the data file.
func (f *File) crcOf(i int64) (uint32, error) {
	bp := verifyBufs.Get().(*[]byte)
	defer verifyBufs.Put(bp)
	buf := *bp
	start, end := f.lay.bounds(i)
	var crc uint32
	for off := start; off < end; {
		k := min(int64(len(buf)), end-off)
		if _, err := f.data.ReadAt(buf[:k], off); err != nil {
			return 0, err
		}
		crc = crc32.Update(crc, castagnoli, buf[:k])
		off += k
	}
	return crc, nil
}

// verifyClaimed checks chunk i, which the caller has claimed (its flight is
// in the map and the chunk is present but unverified), and resolves the
// flight. A chunk whose bytes do not match its record is deleted from the
// index and the bitset, so it is refetched, never served. A disk that cannot
// be read degrades the File instead (the chunk's data may well be fine).
// It reports whether the chunk was good.
func (f *File) verifyClaimed(i int64) bool {
	want, found, err := f.storedCRC(i)
	good := false
	if err == nil && found {
		got, rerr := f.crcOf(i)
		if rerr != nil {
			f.degrade(&diskError{op: "read data", err: rerr})
			f.mu.Lock()
			f.resolveLocked(i, nil)
			f.mu.Unlock()
			return false
		}
		good = got == want
	}
	if !good {
		f.log.Warn("cached chunk failed its checksum; dropping it", "dir", f.dir, "chunk", i)
		// Index first: from here on nothing durable claims the chunk.
		if derr := f.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketChunks).Delete(chunkKey(i))
		}); derr != nil {
			f.degrade(&diskError{op: "commit index", err: derr})
		}
	}
	f.mu.Lock()
	if good {
		f.markVerifiedLocked(i)
	} else {
		f.dropLocked(i)
	}
	f.resolveLocked(i, nil)
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
	defer f.wg.Done()
	bad := 0
	for i := int64(0); i < f.lay.chunks; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !f.present.get(i) || f.verified.get(i) {
			continue
		}
		f.mu.Lock()
		fl := f.inflight[i]
		claim := fl == nil && f.present.get(i) && !f.verified.get(i)
		if claim {
			f.claimLocked(i, i+1)
		}
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
		if claim && !f.verifyClaimed(i) {
			if f.degraded.Load() && f.present.get(i) {
				return fmt.Errorf("cache: verify chunk %d: %w", i, errUncached)
			}
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d chunks of %s failed their checksum and were dropped", ErrCorrupt, bad, f.dir)
	}
	return nil
}
