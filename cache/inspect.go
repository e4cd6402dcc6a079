package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// DirName returns the name of the cache directory for an object identity
// (see fetch.Object.Identity): the first 128 bits of its SHA-256 in hex. The
// name reveals nothing about the URL and has a fixed length.
func DirName(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return hex.EncodeToString(sum[:16])
}

// Inspect reads the meta and chunk counts of the cache in dir without
// opening it for use and without touching the data file (for `rangefs
// status`). Present counts what the index records; checksums are not
// checked, so Verified is 0. It fails with an error wrapping ErrLocked if the cache is in use.
func Inspect(dir string) (Meta, Stats, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return Meta{}, Stats{}, err
	}
	if err := checkDir(dir, fi); err != nil {
		return Meta{}, Stats{}, err
	}
	path := filepath.Join(dir, indexName)
	if _, err := os.Lstat(path); err != nil {
		return Meta{}, Stats{}, err
	}
	if err := refuseLink(path); err != nil {
		return Meta{}, Stats{}, err
	}
	db, err := openBoltGuarded(path, &bolt.Options{ReadOnly: true, Timeout: inspectTimeout, OpenFile: openFileNoFollow})
	if errors.Is(err, bolt.ErrTimeout) {
		return Meta{}, Stats{}, &lockedError{dir: dir, pid: readOwner(dir)}
	}
	if err != nil {
		return Meta{}, Stats{}, fmt.Errorf("inspect cache index %s: %w", path, err)
	}
	defer db.Close()
	m, st, err := inspectIndex(db)
	if err != nil {
		return Meta{}, Stats{}, fmt.Errorf("inspect cache index %s: %w", path, err)
	}
	return m, st, nil
}

func inspectIndex(db *bolt.DB) (m Meta, st Stats, err error) {
	err = guarded(func() error {
		return db.View(func(tx *bolt.Tx) error {
			sm, ok := readMeta(tx)
			if !ok {
				return errors.New("no cache meta recorded")
			}
			if sm.format != formatVersion {
				return fmt.Errorf("cache format %d, this rangefs reads %d", sm.format, formatVersion)
			}
			if validateMeta(sm.meta) != nil {
				return fmt.Errorf("invalid stored meta (size %d, chunk size %d)", sm.meta.Size, sm.meta.ChunkSize)
			}
			m = sm.meta
			l := newLayout(m.Size, m.ChunkSize)
			st = Stats{Size: m.Size, ChunkSize: m.ChunkSize, Chunks: l.chunks}
			if b := tx.Bucket(bucketChunks); b != nil {
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					if len(k) != 8 {
						continue
					}
					if i := int64(binary.BigEndian.Uint64(k)); i >= 0 && i < l.chunks && int64(len(v)) == 4*l.blocks(i) {
						st.Present++
						st.BytesPresent += l.chunkLen(i)
					}
				}
			}
			return nil
		})
	})
	return m, st, err
}
