package fs

import (
	"sync"
	"time"
)

// failMemory is how long a read that ran out its op timeout makes later
// reads of the same bytes fail at once (unless those bytes have arrived by
// then). The kernel turns one buffered read into a read-ahead request and,
// when that fails, a second, synchronous request for the same page; without
// this memory the reader would wait two op timeouts. The retry follows the
// failure within milliseconds, so a second is ample, and short enough that a
// read after the server is back is not refused for long.
const failMemory = time.Second

// maxFailedSpans bounds the memory: the oldest spans are forgotten first.
const maxFailedSpans = 64

// recentFailures remembers, per file, the byte spans whose reads timed out
// within the last failMemory. Safe for concurrent use. Protects: spans.
type recentFailures struct {
	mu    sync.Mutex
	spans []failedSpan // oldest first
}

type failedSpan struct {
	off, end int64
	at       time.Time
}

// add remembers that a read of [off, end) timed out at now.
func (r *recentFailures) add(off, end int64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(now)
	if len(r.spans) == maxFailedSpans {
		r.spans = append(r.spans[:0], r.spans[1:]...)
	}
	r.spans = append(r.spans, failedSpan{off: off, end: end, at: now})
}

// since reports how long ago a read overlapping [off, end) timed out, if
// that was within failMemory.
func (r *recentFailures) since(off, end int64, now time.Time) (time.Duration, bool) {
	if r == nil {
		return 0, false // none ever
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(now)
	for i := len(r.spans) - 1; i >= 0; i-- {
		if s := r.spans[i]; s.off < end && off < s.end {
			return now.Sub(s.at), true
		}
	}
	return 0, false
}

func (r *recentFailures) pruneLocked(now time.Time) {
	k := 0
	for k < len(r.spans) && now.Sub(r.spans[k].at) >= failMemory {
		k++
	}
	if k > 0 {
		r.spans = append(r.spans[:0], r.spans[k:]...)
	}
}
