package cache

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The store's half of eviction: records go first, holes second, so the index
// can under-report but never over-report (see chunkTable.beginEvict).

var bucketUse = []byte("use") // chunk key → 4-byte use stamp (see fileBudget.use)

func (d osData) Punch(off, n int64) error { return punchHole(d.f, off, n) }

// deleteRecords deletes the records of chunks is in one index commit.
func (s *store) deleteRecords(is []int64) error {
	if len(is) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for _, i := range is {
			if err := b.Delete(chunkKey(i)); err != nil {
				return err
			}
		}
		return nil
	})
}

// punch deallocates the data file's bytes [off, off+n).
func (s *store) punch(off, n int64) error {
	d, can := s.data.(interface{ Punch(off, n int64) error })
	if !can {
		return errors.New("cache: data file cannot punch holes")
	}
	return d.Punch(off, n)
}

// saveUse replaces the stored use stamps with use's entries for the chunks
// present says are recorded: one index commit, at close (putUse saves
// batches of them while the file is open).
func (s *store) saveUse(use []uint32, present bitset) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUse) != nil {
			if err := tx.DeleteBucket(bucketUse); err != nil {
				return err
			}
		}
		b, err := tx.CreateBucket(bucketUse)
		if err != nil {
			return err
		}
		b.FillPercent = 1 // keys go in ascending order
		for i := range int64(len(use)) {
			if !present.get(i) {
				continue
			}
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], use[i])
			if err := b.Put(chunkKey(i), v[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// putUse stores the use stamps us of chunks is (a batch of those that
// changed), in one index commit.
func (s *store) putUse(is []int64, us []uint32) error {
	if len(is) == 0 {
		return nil
	}
	return guarded(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketUse)
			if err != nil {
				return err
			}
			for n, i := range is {
				var v [4]byte
				binary.BigEndian.PutUint32(v[:], us[n])
				if err := b.Put(chunkKey(i), v[:]); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// loadUse fills use with the stored stamps of chunks (one cursor pass).
func (s *store) loadUse(use []uint32) error {
	return guarded(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketUse)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 || len(v) != 4 {
					continue
				}
				if i := binary.BigEndian.Uint64(k); i < uint64(len(use)) {
					use[i] = binary.BigEndian.Uint32(v)
				}
			}
			return nil
		})
	})
}

// openIndexTimeout takes dir's index lock (waiting at most timeout) without
// creating an index that is not there.
func openIndexTimeout(dir string, timeout time.Duration) (*bolt.DB, string, error) {
	path := filepath.Join(dir, indexName)
	if _, err := os.Lstat(path); err != nil {
		return nil, "", err
	}
	if err := refuseLink(path); err != nil {
		return nil, "", err
	}
	db, err := openBoltGuarded(path, &bolt.Options{Timeout: timeout, OpenFile: openFileNoFollow})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, "", &lockedError{dir: dir, pid: readOwner(dir)}
	}
	return db, path, err
}

// errNoRoom fails a run whose next chunk the budget could not make room
// for: its readers are served uncached (it is a diskError for that), and
// nothing is degraded.
var errNoRoom = &diskError{op: "cache budget full", err: errors.New("no room could be made under the cache budget")}
