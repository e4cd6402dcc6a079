package fs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"syscall"

	"rangefs/cache"
)

// toErrno is the one place where an error from cache/ becomes a FUSE status.
// go-fuse's own fusefs.ToErrno maps unknown errors to ENOSYS, which programs
// read as "this filesystem cannot read", so it is never used here.
func toErrno(log *slog.Logger, op, name string, err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return 0
	case errors.Is(err, context.Canceled):
		// The caller was interrupted (Ctrl-C, or a Go runtime preemption
		// signal); only its wait ends, the shared fetch goes on.
		return syscall.EINTR
	case errors.Is(err, cache.ErrStale):
		errno = syscall.ESTALE
	case errors.As(err, &errno):
		// A local errno (ENOSPC, EIO from the disk) passes through as is.
	default:
		errno = syscall.EIO
	}
	log.Warn("read failed", "op", op, "file", name, "errno", errno.Error(), "err", err)
	return errno
}
