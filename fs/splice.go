package fs

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"rangefs/cache"
)

// maxWrite is the largest READ the kernel sends us (and so the largest
// reply): measured 358 MB/s at go-fuse's 128 KiB default versus 974 MB/s at
// 1 MiB on this kind of machine.
const maxWrite = 1 << 20

// spliceMax is the largest read that may be spliced (see tree.spliceMax),
// 0 if none may. go-fuse grows its pipe to a reply plus a page for every
// splice. Beyond the system's pipe-max-size (1 MiB by default) only a
// process with CAP_SYS_RESOURCE may grow one, and the pipes of a user
// without CAP_SYS_RESOURCE or CAP_SYS_ADMIN are capped together (16384
// pages by default), past which they cannot grow at all: a splice that
// cannot grow its pipe falls back to a copy after a logged error, read
// after read. So a daemon splices only with one of those capabilities
// (root has both, outside a container), and up to what one pipe took here,
// at most a whole READ.
func spliceMax(no bool) int {
	if no || !capable(capSysAdmin) && !capable(capSysResource) {
		return 0
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return 0
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	page := os.Getpagesize()
	for _, size := range []int{maxWrite, pipeMaxSize() - page - fuseOutHeader} {
		// go-fuse's own Grow: the reply, its header and a page.
		want := size + fuseOutHeader + page
		if size < 64<<10 || size > maxWrite {
			continue
		}
		const setPipeSize = 1031 // F_SETPIPE_SZ
		got, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[0]), setPipeSize, uintptr(want))
		if errno == 0 && int(got) >= want {
			return size &^ (page - 1)
		}
	}
	return 0
}

// The capabilities that lift the pipe limits (see spliceMax).
const (
	capSysAdmin    = 21
	capSysResource = 24
)

// capable reports whether this process has capability c in effect, from
// /proc/self/status; false if that cannot be read.
func capable(c uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<c) != 0
		}
	}
	return false
}

// fuseOutHeader is the size of a FUSE reply's header.
const fuseOutHeader = 16

// pipeMaxSize is /proc/sys/fs/pipe-max-size, 0 if unreadable.
func pipeMaxSize() int {
	b, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}

// heldResult answers a READ with bytes left in a cache's data file: go-fuse
// splices them from the file descriptor (Seekable), or, if the splice
// fails, copies them with Bytes; either way it calls Done once the reply
// is written, which unpins them. Never of zero bytes: go-fuse writes an
// empty reply without calling Done.
type heldResult struct {
	h *cache.Held
	t *tree
}

var _ fuse.ReadResult = heldResult{}

func (r heldResult) Size() int { return r.h.Len() }

// Seekable is go-fuse's interface for a result it may splice from a file.
func (r heldResult) Seekable() (fd uintptr, off int64, sz int) { return r.h.Fd() }

func (r heldResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	r.t.heldCopied.Add(1)
	n := r.h.Len()
	if len(buf) < n {
		buf = make([]byte, n)
	}
	if err := r.h.ReadTo(buf[:n]); err != nil {
		return nil, fuse.EIO
	}
	return buf[:n], fuse.OK
}

func (r heldResult) Done() { r.h.Release() }

// ReadHeld is cache.Reader.ReadHeld, or ReadAt (never holding) with a done ctx.
func (c *cacheReader) ReadHeld(ctx context.Context, p []byte, off int64) (int, *cache.Held, error) {
	if ctx.Err() != nil {
		n, err := c.ReadAt(ctx, p, off)
		return n, nil, err
	}
	return c.r.ReadHeld(ctx, p, off)
}

var _ HeldReader = (*cacheReader)(nil)
