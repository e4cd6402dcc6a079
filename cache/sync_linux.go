//go:build linux

package cache

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data (and the metadata needed to read it back, such
// as its size) to stable storage. It is cheaper than fsync because it skips
// timestamps, and it is all the crash-safety promise needs: data reaches the
// disk before the index record that claims it.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// Advice values of posix_fadvise(2).
const (
	fadvWillNeed = 3
)

// fadvise passes advice about f's bytes [off, off+n) to the kernel; errors
// are ignored because advice only changes speed.
func fadvise(f *os.File, off, n int64, advice int) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		syscall.Syscall6(syscall.SYS_FADVISE64, fd, uintptr(off), uintptr(n), uintptr(advice), 0, 0)
	})
}
