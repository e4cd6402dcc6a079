package fs

import (
	"context"
	"strconv"
	"sync"
	"time"

	"rangefs/cache"
)

// CacheFile shows an open cache.File as a File. The caller owns f and
// closes it after the server has stopped; closing it while mounted is
// allowed (reads then fail with EIO at once, which is how a shutdown ends
// waiting reads before unmounting). mtime zero means the mount time.
func CacheFile(f *cache.File, mtime time.Time) File { return &cacheFile{f: f, mtime: mtime} }

type cacheFile struct {
	f     *cache.File
	mtime time.Time
}

func (c *cacheFile) Attr() Attr {
	return Attr{Size: c.f.Meta().Size, Mtime: c.mtime, Exact: true}
}

func (c *cacheFile) Stat(context.Context) (Attr, error) { return c.Attr(), nil }

func (c *cacheFile) Open(context.Context) (Reader, error) {
	return NewCacheReader(c.f), nil
}

func (c *cacheFile) Stats() Stats { return StatsOf(c.f) }

func (c *cacheFile) Version() string { return versionOf(c.f.Meta()) }

func versionOf(m cache.Meta) string {
	return m.URL + "\x00" + m.ETag + "\x00" + m.LastModified + "\x00" + strconv.FormatInt(m.Size, 10)
}

// StatsOf describes an open cache.File.
func StatsOf(f *cache.File) Stats {
	m, st := f.Meta(), f.Stats()
	return Stats{
		URL: m.URL, ETag: m.ETag, LastModified: m.LastModified,
		Size: st.Size, ChunkSize: st.ChunkSize, CachedBytes: st.BytesPresent,
		Chunks: st.Chunks, Present: st.Present,
	}
}

// NewCacheReader is one handle's reader of an open cache.File: it keeps the
// handle's sequential detector that drives read-ahead, and offers the data
// file for passthrough once the whole file is verified. Closing it leaves f
// open.
func NewCacheReader(f *cache.File) Reader { return &cacheReader{f: f, r: f.NewReader()} }

var _ ReadAheadLimiter = (*cacheReader)(nil)

type cacheReader struct {
	f      *cache.File
	r      *cache.Reader
	mu     sync.Mutex
	pinned bool // PinAll holds for the kernel's passthrough reads until Close
}

func (c *cacheReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if ctx.Err() != nil {
		// Nothing to wait for: read what is present, without counting the
		// read in the handle's sequential detector.
		return c.f.ReadAt(ctx, p, off)
	}
	return c.r.ReadAt(ctx, p, off)
}

// PassthroughPath pins every chunk of the file (no budget eviction) before
// it checks that the file is whole, and keeps it pinned until Close: a
// punched hole would read as zeros through passthrough.
func (c *cacheReader) PassthroughPath() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pinned {
		c.f.PinAll()
		c.pinned = true
	}
	if c.f.AllVerified() {
		return c.f.DataPath()
	}
	c.f.UnpinAll()
	c.pinned = false
	return ""
}

func (c *cacheReader) Version() string { return versionOf(c.f.Meta()) }

// Filling reports whether some chunk is not cached yet (see Filling).
func (c *cacheReader) Filling() bool {
	s := c.f.Stats()
	return s.Present < s.Chunks
}

func (c *cacheReader) LimitReadAhead(end int64) { c.r.LimitReadAhead(end) }

// Close closes the handle's cache.Reader, so its read-ahead and the fetches
// made for it stop, and ends PassthroughPath's pin.
func (c *cacheReader) Close() error {
	err := c.r.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinned {
		c.f.UnpinAll()
		c.pinned = false
	}
	return err
}

// Static is a Dir of fixed entries (sorted here), listed from memory.
func Static(entries []Entry, mtime time.Time) Dir {
	es := append([]Entry(nil), entries...)
	sortEntries(es)
	return &staticDir{entries: es, mtime: mtime}
}

type staticDir struct {
	entries []Entry
	mtime   time.Time
}

func (s *staticDir) List(context.Context) ([]Entry, error) { return s.entries, nil }
func (s *staticDir) Mtime() time.Time                      { return s.mtime }
