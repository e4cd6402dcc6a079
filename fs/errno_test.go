package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"rangefs/cache"
)

func TestErrnoOf(t *testing.T) {
	refused := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"end of file", io.EOF, 0},
		{"fetch error wrapping EOF", fmt.Errorf("giving up after 6 attempts: %w", io.EOF), syscall.EIO},
		{"unexpected EOF", io.ErrUnexpectedEOF, syscall.EIO},
		{"interrupted", context.Canceled, syscall.EINTR},
		{"interrupted, wrapped", fmt.Errorf("wait: %w", context.Canceled), syscall.EINTR},
		{"op timeout", context.DeadlineExceeded, syscall.EIO},
		{"remote changed", fmt.Errorf("x: %w", cache.ErrStale), syscall.ESTALE},
		{"connection refused", fmt.Errorf("probe: %w", refused), syscall.EIO},
		{"closed", cache.ErrClosed, syscall.EIO},
		{"anything", errors.New("boom"), syscall.EIO},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("%s: errnoOf(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
