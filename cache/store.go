package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// On-disk layout of one cache directory:
//
//	data      sparse file, truncated to the full logical size; chunk i lives
//	          at offset i*ChunkSize
//	index.db  bbolt: bucket "meta" (what version of what object) and bucket
//	          "chunks" (one record per chunk known to be in data: the
//	          CRC-32C of each of its blocks, see blockSize)
//	owner     the PID of the process holding the index lock, for the message
//	          a second process prints
const (
	dataName  = "data"
	indexName = "index.db"
	ownerName = "owner"

	// formatVersion changes whenever the meaning of data or index.db
	// changes; a cache of another version is discarded, never misread.
	// 1: one CRC-32C per chunk. 2: one CRC-32C per block (see blockSize).
	formatVersion = 2

	// lockTimeout bounds how long Open waits for another holder: long
	// enough to ride out an Inspect's shared lock, short enough that a
	// second mount fails at once (promise 4).
	lockTimeout = time.Second
	// inspectTimeout is the read-only wait of Inspect.
	inspectTimeout = 250 * time.Millisecond
)

var (
	bucketMeta   = []byte("meta")
	bucketChunks = []byte("chunks")

	keyFormat  = []byte("format")
	keySize    = []byte("size")
	keyChunk   = []byte("chunk_size")
	keyETag    = []byte("etag")
	keyWeak    = []byte("weak_etag")
	keyLastMod = []byte("last_modified")
	keyDate    = []byte("date")
	keyURL     = []byte("url")
	keySource  = []byte("source")
)

// dataFile is everything the cache does to the sparse data file once it is
// open. It exists so tests can inject disk failures (ENOSPC, EIO) between the
// cache and the file system.
type dataFile interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error // fdatasync: the data written so far is durable when it returns nil
	Close() error
}

// osData is the real dataFile.
type osData struct {
	f  *os.File
	fd uintptr // f.Fd(), taken once
}

func (d osData) ReadAt(p []byte, off int64) (int, error)  { return d.f.ReadAt(p, off) }
func (d osData) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d osData) Sync() error                              { return fdatasync(d.f) }
func (d osData) Close() error                             { return d.f.Close() }

// WillNeed starts reading [off, off+n) of the data file into the page cache
// in the background. A sequential reader of cached chunks asks for its
// read-ahead window this way: its reads reach the data file from several
// FUSE requests at once and slightly out of order, which defeats the
// kernel's own read-ahead for the file.
func (d osData) WillNeed(off, n int64) { fadvise(d.f, off, n, fadvWillNeed) }

// store is one object's bytes and records on disk: the sparse data file,
// the bbolt index, the group committer that makes written chunks durable,
// and the disk half of verification (records and block checksums). It
// knows chunks only by index and layout; runs, readers and chunk states
// are not its business: the committer reports each round to its owner
// (durable), which flips the chunk table.
//
// After a disk failure it is degraded: nothing more is written or
// committed this session (see degrade). Safe for concurrent use; the data
// file's bytes of one chunk are written by one writer at a time, which the
// chunk table's claims ensure.
type store struct {
	dir, dataPath string
	lay           layout
	log           *slog.Logger
	db            *bolt.DB
	data          dataFile
	com           *committer
	// cause is the disk failure that degraded the store, after which
	// nothing more is cached (see degrade); nil until then.
	cause atomic.Pointer[error]
	// commitsStopped: a sync or an index commit failed, so nothing more is
	// committed this session (see committer.round).
	commitsStopped atomic.Bool
	// sealed is the set of chunks a matching seal vouched for at Open (one
	// bit per chunk, as a bitset's words), nil without one; see seal.go.
	sealed []uint64
	// seal, if set before close, is the set of verified chunks close
	// writes a seal for.
	seal func() bitset
}

// newStore wraps an open index and data file, with a committer that hands
// each round to durable; start starts it.
func newStore(dir, dataPath string, lay layout, log *slog.Logger, db *bolt.DB, data dataFile, durable func(batch []commitRec, err error)) *store {
	s := &store{dir: dir, dataPath: dataPath, lay: lay, log: log, db: db, data: data}
	s.com = newCommitter(s, durable)
	return s
}

// start starts the committer; close stops it.
func (s *store) start() { go s.com.run() }

// degrade stops caching after a disk failure. Reads keep working from the
// network (and from chunks already committed); it logs once.
func (s *store) degrade(err error) {
	if s.cause.CompareAndSwap(nil, &err) {
		s.log.Error("cache disk failed; serving uncached from now on", "dir", s.dir, "err", err)
	}
}

// degraded reports whether a disk failure stopped caching (see degrade).
func (s *store) degraded() bool { return s.cause.Load() != nil }

// uncached is the error of work refused because the store is degraded: it
// wraps the failure that degraded it, so that a full disk still reads as
// ENOSPC to the caller (get's exit code and advice).
func (s *store) uncached() error {
	if p := s.cause.Load(); p != nil {
		return &diskError{op: "caching stopped", err: fmt.Errorf("an earlier disk error disabled the cache: %w", *p)}
	}
	return errUncached
}

// dataFd gives the data file's descriptor, if the data file is a plain
// file (not a test's wrapper, which must see every read).
func (s *store) dataFd() (uintptr, bool) {
	if d, ok := s.data.(osData); ok {
		return d.fd, true
	}
	return 0, false
}

// readAt reads p at off from the data file.
func (s *store) readAt(p []byte, off int64) error {
	_, err := s.data.ReadAt(p, off)
	return err
}

// writeAt writes p at off into the data file. A failure degrades the
// store and is returned as a diskError.
func (s *store) writeAt(p []byte, off int64) error {
	if _, err := s.data.WriteAt(p, off); err != nil {
		err = &diskError{op: "write data", err: err}
		s.degrade(err)
		return err
	}
	return nil
}

// willNeed asks the kernel to read [off, off+n) of the data file ahead, if
// the data file can.
func (s *store) willNeed(off, n int64) {
	if d, can := s.data.(interface{ WillNeed(off, n int64) }); can {
		d.WillNeed(off, n)
	}
}

// loadRecords calls load for every chunk the index records, with one
// cursor pass. Checksums are not read here (they are checked when a chunk
// is first served), so a cache with many chunks opens at once. Records that
// cannot be right, because the data file (dataLen bytes) does not reach
// their chunk or the key is out of range, are deleted before anything is
// served.
func (s *store) loadRecords(dataLen int64, load func(i int64)) error {
	var drop [][]byte
	err := guarded(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketChunks).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				i := int64(-1)
				if len(k) == 8 {
					i = int64(binary.BigEndian.Uint64(k))
				}
				if i < 0 || i >= s.lay.chunks || int64(len(v)) != 4*s.lay.blocks(i) {
					drop = append(drop, append([]byte(nil), k...))
					continue
				}
				if _, end := s.lay.bounds(i); end > dataLen {
					drop = append(drop, append([]byte(nil), k...))
					continue
				}
				load(i)
			}
			return nil
		})
	})
	if err != nil || len(drop) == 0 {
		return err
	}
	s.log.Info("dropping index records without data", "dir", s.dir, "records", len(drop))
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

var verifyBufs = sync.Pool{New: func() any { b := make([]byte, blockSize); return &b }}

// record returns a copy of the index record of chunk i: the CRC-32C of each
// of its blocks. found is false when there is none, or when it does not
// have one checksum per block.
func (s *store) record(i int64) (rec []byte, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketChunks).Get(chunkKey(i))
		if int64(len(v)) == 4*s.lay.blocks(i) {
			rec, found = append([]byte(nil), v...), true
		}
		return nil
	})
	return rec, found, err
}

// deleteRecord deletes chunk i's record (first step of dropping or
// evicting a chunk: from then on nothing durable claims it).
func (s *store) deleteRecord(i int64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChunks).Delete(chunkKey(i))
	})
}

// blockCRC computes the CRC-32C of block b of chunk i as it is in the data
// file.
func (s *store) blockCRC(i, b int64) (uint32, error) {
	bp := verifyBufs.Get().(*[]byte)
	defer verifyBufs.Put(bp)
	start, end := s.lay.blockBounds(i, b)
	buf := (*bp)[:end-start]
	if _, err := s.data.ReadAt(buf, start); err != nil {
		return 0, err
	}
	return crc32.Checksum(buf, castagnoli), nil
}

// close commits what the committer holds and closes the index and the data
// file; the caller has stopped every writer. It removes the owner file.
func (s *store) close() error {
	s.com.stop()
	errs := []error{}
	if s.seal != nil && !s.degraded() && !s.commitsStopped.Load() {
		// A clean close: vouch for what was verified (see seal.go). A
		// seal that cannot be written only costs the next Open its
		// checks.
		if err := s.writeSeal(s.seal()); err != nil {
			s.log.Warn("could not seal the cache; the next open checks every block", "dir", s.dir, "err", err)
		}
	}
	if err := os.Remove(filepath.Join(s.dir, ownerName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	errs = append(errs, s.db.Close(), s.data.Close())
	return errors.Join(errs...)
}

// openStore opens the data file of dir, whose index db is open and locked
// (moved, if not "", is where openIndex put an unreadable one), and decides
// whether what is on disk belongs to m: if not, it is discarded, and
// discarded says why. It calls load for every chunk the index records that
// the data file can hold. On error the caller closes db.
func openStore(dir string, m Meta, lay layout, log *slog.Logger, db *bolt.DB, moved string,
	wrapData func(dataFile) dataFile, load func(i int64), durable func(batch []commitRec, err error)) (st *store, discarded string, err error) {
	if err := writeOwner(dir); err != nil {
		return nil, "", fmt.Errorf("cache: write owner file: %w", err)
	}
	dataPath := filepath.Join(dir, dataName)
	if err := refuseLink(dataPath); err != nil {
		return nil, "", err
	}
	df, err := openFileNoFollow(dataPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("cache: open data file: %w", err)
	}
	opened := false
	defer func() {
		if !opened {
			df.Close()
		}
	}()
	fi, err := df.Stat()
	if err != nil {
		return nil, "", err
	}
	dataLen := fi.Size()

	// Discarding happens in the index first, then in the data file, so a
	// crash in between leaves an index that under-reports.
	var sm storedMeta
	var hasMeta bool
	if err := guarded(func() error {
		return db.View(func(tx *bolt.Tx) error { sm, hasMeta = readMeta(tx); return nil })
	}); err != nil {
		return nil, "", err
	}
	switch {
	case moved != "":
		discarded = fmt.Sprintf("cache index was unreadable; moved aside to %s and rebuilt", filepath.Base(moved))
	case hasMeta:
		discarded = metaMismatch(sm, m)
	}
	if !hasMeta || discarded != "" {
		if err := db.Update(func(tx *bolt.Tx) error { return writeMeta(tx, m) }); err != nil {
			return nil, "", fmt.Errorf("cache: write index: %w", err)
		}
		if dataLen > 0 {
			nf, err := replaceData(df, dataPath)
			if err != nil {
				return nil, "", fmt.Errorf("cache: discard data: %w", err)
			}
			df, dataLen = nf, 0
		}
	}
	if discarded != "" {
		log.Info("discarded old cache", "dir", dir, "reason", discarded)
	}
	// The seal goes before anything is written (see seal.go); after a
	// discard or a rebuilt index it cannot match, and is only removed.
	gen, err := indexGen(db)
	if err != nil {
		return nil, "", fmt.Errorf("cache: read index: %w", err)
	}
	if moved != "" || discarded != "" || !hasMeta {
		gen = 0
	}
	sealed, err := takeSeal(dir, gen, fi, len(newBitset(lay.chunks)))
	if err != nil {
		return nil, "", err
	}
	st = newStore(dir, dataPath, lay, log, db, nil, durable)
	st.sealed = sealed
	if err := st.loadRecords(dataLen, load); err != nil {
		return nil, "", err
	}
	if dataLen != m.Size {
		if err := df.Truncate(m.Size); err != nil {
			return nil, "", fmt.Errorf("cache: size data file: %w", err)
		}
	}
	st.data = osData{f: df, fd: df.Fd()}
	if wrapData != nil {
		st.data = wrapData(st.data)
	}
	opened = true
	return st, discarded, nil
}

// replaceData discards the old data file df at path by unlinking it and
// creating an empty one in its place, and returns the new one; df is closed.
// The old file is never truncated or written: a handle another process still
// holds on it (a FUSE passthrough open outlives the daemon that gave it)
// keeps reading the version it was given, never zeros or the next version.
// Its blocks are freed when the last such handle closes.
func replaceData(df *os.File, path string) (*os.File, error) {
	df.Close()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return openFileNoFollow(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}

// castagnoli is the CRC used for chunk checksums. CRC-32C is computed by a
// dedicated CPU instruction (SSE4.2 on amd64, the CRC extension on arm64),
// which Go's hash/crc32 uses, at many GB/s per core: checksumming every byte
// as it streams in costs little next to the >700 MB/s the data path must
// sustain on two cores. It also detects more error patterns than the IEEE
// polynomial, which is why storage systems (ext4, btrfs, iSCSI) use it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)
