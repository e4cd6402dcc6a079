package cache

import (
	"sync/atomic"
	"time"
)

// ReadCounters count what ReadAt served from one File this session.
type ReadCounters struct {
	Reads          int64 // ReadAt calls that returned bytes
	Bytes          int64 // bytes returned
	BytesFromCache int64 // bytes of reads whose chunks were all on disk when asked
}

type readCounters struct{ reads, bytes, cached atomic.Int64 }

// ReadObserver is told the duration and size of each ReadAt that returned
// bytes, and whether its chunks were already on disk (a cache hit).
type ReadObserver func(d time.Duration, n int, hit bool)

var readObserver atomic.Pointer[ReadObserver]

// SetReadObserver installs fn for every File of this process (nil removes it).
func SetReadObserver(fn ReadObserver) {
	if fn == nil {
		readObserver.Store(nil)
		return
	}
	readObserver.Store(&fn)
}

// ReadCounters returns the File's read counters.
func (f *File) ReadCounters() ReadCounters {
	rc := f.counters()
	if rc == nil {
		return ReadCounters{}
	}
	return ReadCounters{Reads: rc.reads.Load(), Bytes: rc.bytes.Load(), BytesFromCache: rc.cached.Load()}
}

func (f *File) counters() *readCounters {
	v, ok := openFiles.Load(f)
	if !ok {
		return nil
	}
	return v.(*readCounters)
}

// presentAll reports whether chunks [first, end) are all on disk (written
// or committed); lock-free like chunkTable.servable.
func (f *File) presentAll(first, end int64) bool {
	for i := first; i < end; i++ {
		if !f.tab.present.get(i) && !f.tab.written.get(i) {
			return false
		}
	}
	return true
}

// countRead records one ReadAt of n bytes that started at start.
func (f *File) countRead(start time.Time, n int, hit bool) {
	if n <= 0 {
		return
	}
	if rc := f.counters(); rc != nil {
		rc.reads.Add(1)
		rc.bytes.Add(int64(n))
		if hit {
			rc.cached.Add(int64(n))
		}
	}
	if fn := readObserver.Load(); fn != nil {
		(*fn)(time.Since(start), n, hit)
	}
}
