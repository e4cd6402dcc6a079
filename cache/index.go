package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openIndex opens (creating if needed) dir/index.db with the exclusive lock.
// An index bbolt cannot read is renamed aside and replaced by an empty one;
// moved names the new location of the old file then. A non-nil damaged
// (a corruptionError found by the caller while reading a previous open of
// the index, now closed) skips straight to that. A lock held elsewhere
// yields a lockedError.
func openIndex(dir string, damaged error) (db *bolt.DB, moved string, err error) {
	path := filepath.Join(dir, indexName)
	if err := refuseLink(path); err != nil {
		return nil, "", err
	}
	opts := &bolt.Options{Timeout: lockTimeout, OpenFile: openFileNoFollow}
	err = damaged
	if err == nil {
		db, err = openBoltGuarded(path, opts)
		if err == nil {
			return db, "", nil
		}
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, "", &lockedError{dir: dir, pid: readOwner(dir)}
		}
		if !isCorruption(err) {
			return nil, "", fmt.Errorf("open cache index %s: %w", path, err)
		}
	}
	moved = fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if rerr := os.Rename(path, moved); rerr != nil {
		return nil, "", fmt.Errorf("cache index %s is unreadable (%v) and could not be moved aside: %w", path, err, rerr)
	}
	db, err = openBoltGuarded(path, opts)
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, "", &lockedError{dir: dir, pid: readOwner(dir)}
		}
		return nil, "", fmt.Errorf("create cache index %s: %w", path, err)
	}
	return db, moved, nil
}

// corruptionError marks an index that bbolt opened or read only with a panic
// or a fault, or failed to validate.
type corruptionError struct{ cause any }

func (e *corruptionError) Error() string { return fmt.Sprintf("index unreadable: %v", e.cause) }

// isCorruption tells an unreadable index (move it aside) from an environment
// problem such as permissions or a full file table (report it): bbolt's
// validation errors and recovered panics are the former, system call errors
// the latter.
func isCorruption(err error) bool {
	var ce *corruptionError
	if errors.As(err, &ce) {
		return true
	}
	var re *refusedError
	if errors.As(err, &re) {
		return false
	}
	if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) {
		return true
	}
	var pe *fs.PathError
	var errno syscall.Errno
	return !errors.As(err, &pe) && !errors.As(err, &errno)
}

// openBoltGuarded opens a bbolt file, turning a panic or a memory fault while
// bbolt reads a damaged file into an error (so a bad index is moved aside,
// never a crash loop).
func openBoltGuarded(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	err = guarded(func() error {
		db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// guarded runs fn, a read of index.db, turning a panic or memory fault
// inside bbolt (a damaged page) into a corruptionError, so the index is
// moved aside and rebuilt instead of crashing the process on every start.
func guarded(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &corruptionError{cause: r}
		}
	}()
	return fn()
}

// storedMeta is what index.db says about the cached object.
type storedMeta struct {
	format uint64
	meta   Meta
}

// readMeta returns the stored meta, or ok=false for a fresh (or meta-less)
// index.
func readMeta(tx *bolt.Tx) (sm storedMeta, ok bool) {
	b := tx.Bucket(bucketMeta)
	if b == nil || tx.Bucket(bucketChunks) == nil {
		return sm, false
	}
	u64 := func(k []byte) uint64 {
		v := b.Get(k)
		if len(v) != 8 {
			return 0
		}
		return binary.BigEndian.Uint64(v)
	}
	sm.format = u64(keyFormat)
	sm.meta = Meta{
		Size:         int64(u64(keySize)),
		ChunkSize:    int64(u64(keyChunk)),
		ETag:         string(b.Get(keyETag)),
		WeakETag:     string(b.Get(keyWeak)),
		LastModified: string(b.Get(keyLastMod)),
		Date:         string(b.Get(keyDate)),
		URL:          string(b.Get(keyURL)),
		Source:       string(b.Get(keySource)),
	}
	return sm, sm.format != 0
}

// writeMeta replaces the meta bucket and empties the chunks bucket: the
// index then describes m with nothing cached.
func writeMeta(tx *bolt.Tx, m Meta) error {
	for _, name := range [][]byte{bucketMeta, bucketChunks} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
	}
	if _, err := tx.CreateBucket(bucketChunks); err != nil {
		return err
	}
	b, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	put64 := func(k []byte, v uint64) error {
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], v)
		return b.Put(k, buf[:])
	}
	if err := put64(keyFormat, formatVersion); err != nil {
		return err
	}
	if err := put64(keySize, uint64(m.Size)); err != nil {
		return err
	}
	if err := put64(keyChunk, uint64(m.ChunkSize)); err != nil {
		return err
	}
	for k, v := range map[string]string{
		string(keyETag): m.ETag, string(keyWeak): m.WeakETag, string(keyLastMod): m.LastModified,
		string(keyDate): m.Date, string(keyURL): m.URL, string(keySource): m.Source,
	} {
		if err := b.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}

// metaMismatch explains why a stored cache does not belong to m, or returns
// "" when it does. URL is informational and not compared (Source is, when
// both have one); Date is not compared but must show that the stored
// version is proven (provenSame).
func metaMismatch(sm storedMeta, m Meta) string {
	var why []string
	if sm.format != formatVersion {
		why = append(why, fmt.Sprintf("cache format %d, want %d", sm.format, formatVersion))
	}
	if sm.meta.Size != m.Size {
		why = append(why, fmt.Sprintf("size %d, now %d", sm.meta.Size, m.Size))
	}
	if sm.meta.ChunkSize != m.ChunkSize {
		why = append(why, fmt.Sprintf("chunk size %d, now %d", sm.meta.ChunkSize, m.ChunkSize))
	}
	if sm.meta.ETag != m.ETag {
		why = append(why, fmt.Sprintf("ETag %q, now %q", sm.meta.ETag, m.ETag))
	}
	if sm.meta.WeakETag != m.WeakETag {
		why = append(why, fmt.Sprintf("weak ETag %q, now %q", sm.meta.WeakETag, m.WeakETag))
	}
	if sm.meta.LastModified != m.LastModified {
		why = append(why, fmt.Sprintf("Last-Modified %q, now %q", sm.meta.LastModified, m.LastModified))
	}
	if sm.meta.Source != "" && m.Source != "" && sm.meta.Source != m.Source {
		if sm.meta.URL != m.URL {
			why = append(why, fmt.Sprintf("of another URL (%s), now %s", sm.meta.URL, m.URL))
		} else {
			// The two differ in what redaction hides (a query value).
			why = append(why, "of another URL (its query differs)")
		}
	}
	if len(why) == 0 {
		return provenSame(sm.meta)
	}
	return "cached version differs: " + strings.Join(why, "; ")
}

// lastModifiedMargin is how long before the server's Date a Last-Modified
// must lie to prove a version. A change within the second of Last-Modified
// keeps the same Last-Modified, so a Last-Modified is a strong validator
// only if the object was already that old when caching began (RFC 9110
// section 8.8.2.2 asks for one second); the margin also covers a few
// seconds of skew between the clock that stamped the file and the one that
// sent Date (an origin behind a CDN).
const lastModifiedMargin = time.Minute

// provenSame returns "" when the validators of the stored version, all of
// which equal the server's now, prove that its cached bytes are of the
// version the server serves now, and otherwise why not. A strong ETag proves
// it. A Last-Modified proves it when the Date the server sent as the cache
// was created (stored then, never updated) is at least lastModifiedMargin
// later: any change after that moment shows a new Last-Modified. A weak
// ETag only says the two are equivalent, not byte-identical, and no
// validator at all proves nothing.
func provenSame(m Meta) string {
	if m.ETag != "" {
		return ""
	}
	if m.LastModified != "" && m.Date != "" {
		lm, err1 := http.ParseTime(m.LastModified)
		date, err2 := http.ParseTime(m.Date)
		if err1 == nil && err2 == nil && date.Sub(lm) >= lastModifiedMargin {
			return ""
		}
	}
	var has string
	switch {
	case m.LastModified != "" && m.Date == "":
		has = "no Date was sent to show how old its Last-Modified is"
	case m.LastModified != "":
		has = "its Last-Modified is too close to when caching began"
	case m.WeakETag != "":
		has = "it has only a weak ETag"
	default:
		has = "the server sends no validator"
	}
	return "cached version cannot be proven the same: no strong ETag, and " + has
}

func chunkKey(i int64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(i))
	return k[:]
}
