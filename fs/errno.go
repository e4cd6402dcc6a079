package fs

import (
	"context"
	"errors"
	"io"
	iofs "io/fs"
	"syscall"

	"rangefs/cache"
)

// errnoOf is the one place where an error from cache/ becomes a FUSE status.
// go-fuse's own fusefs.ToErrno maps unknown errors to ENOSYS, which programs
// read as "this filesystem cannot read", so it is never used here.
//
// Only the bare io.EOF that cache.File.ReadAt returns at the end of the file
// is a success: a fetch error may wrap io.EOF (a connection closed early),
// and treating that as EOF would hand the program a silently short file.
// Errno values inside network errors (ECONNREFUSED, ECONNRESET) are not
// passed on either: to a reader of a file, a failed network is an I/O error.
func errnoOf(err error) syscall.Errno {
	switch {
	case err == nil, err == io.EOF:
		return 0
	case errors.Is(err, context.Canceled):
		// The caller was interrupted (Ctrl-C, or a Go runtime preemption
		// signal); only its wait ends, the shared fetch goes on.
		return syscall.EINTR
	case errors.Is(err, cache.ErrStale):
		return syscall.ESTALE
	case errors.Is(err, errors.ErrUnsupported):
		// The server cannot serve this file in ranges (Open says why in
		// the log): "Operation not supported" tells the user more than EIO.
		return syscall.EOPNOTSUPP
	case errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	}
	return syscall.EIO
}
