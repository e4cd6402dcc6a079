package cache

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by this package. Test for them with errors.Is; the
// returned errors wrap them with detail (which directory, which process,
// what the Source said).
var (
	// ErrLocked means another process (or another open in this process)
	// holds the cache directory. The wrapping error names the holder's PID
	// when it is known.
	ErrLocked = errors.New("cache is in use by another process")
	// ErrStale means the remote file changed since the File was opened.
	// Once seen, every later read or fill of that File fails with it: a
	// handle is bound to one version and never mixes two.
	ErrStale = errors.New("remote file changed")
	// ErrCorrupt reports cached data that failed its checksum. Such chunks
	// are dropped (and refetched on demand), never served.
	ErrCorrupt = errors.New("cache data failed checksum")
	// ErrClosed is returned by operations on a closed File.
	ErrClosed = errors.New("cache file closed")
)

// IsRemoteChanged reports whether err (or anything it wraps) has a
// RemoteChanged() bool method returning true. fetch.ErrChanged has one; the
// cache cannot name that type because it must not import fetch.
func IsRemoteChanged(err error) bool {
	var rc interface{ RemoteChanged() bool }
	return errors.As(err, &rc) && rc.RemoteChanged()
}

// lockedError is returned when the index is locked by someone else. It
// matches ErrLocked under errors.Is.
type lockedError struct {
	dir string
	pid int // 0 when the owner file could not be read
}

func (e *lockedError) Error() string {
	if e.pid > 0 {
		return fmt.Sprintf("cache %s is in use by rangefs pid %d", e.dir, e.pid)
	}
	return fmt.Sprintf("cache %s is in use by another process", e.dir)
}

func (e *lockedError) Unwrap() error { return ErrLocked }

// diskError marks a failure of the local cache disk (write, sync, index
// commit). It never reaches a reader that the network can serve: the File
// degrades to uncached reads instead.
type diskError struct {
	op  string
	err error
}

func (e *diskError) Error() string { return "cache disk: " + e.op + ": " + e.err.Error() }
func (e *diskError) Unwrap() error { return e.err }

// errAbandoned is given to waiters of a chunk whose fetch was cancelled by
// the job that claimed it (a Fill that stopped early). It is not a failure of
// the chunk: a waiter claims the chunk itself and retries.
var errAbandoned = errors.New("chunk fetch abandoned")

// staleError wraps a Source error that said the remote changed.
func staleError(cause error) error {
	if strings.HasPrefix(cause.Error(), ErrStale.Error()) {
		// fetch's own change error already says so: say it once.
		return &staleErr{cause}
	}
	return fmt.Errorf("%w: %w", ErrStale, cause)
}

// staleErr is an ErrStale whose cause's message already begins with
// ErrStale's words.
type staleErr struct{ cause error }

func (e *staleErr) Error() string   { return e.cause.Error() }
func (e *staleErr) Unwrap() []error { return []error{ErrStale, e.cause} }

// errUncached is what the scheduler reports once the File stopped caching
// after a disk failure; readers then fetch straight into their buffers.
var errUncached = &diskError{op: "caching stopped", err: errors.New("an earlier disk error disabled the cache")}

func isDiskError(err error) bool {
	var de *diskError
	return errors.As(err, &de)
}
