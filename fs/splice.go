package fs

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"

	"rangefs/cache"
)

// maxWrite is the largest READ the kernel sends us (and so the largest
// reply): measured 358 MB/s at go-fuse's 128 KiB default versus 974 MB/s at
// 1 MiB on this kind of machine. See readSize for the size a mount uses.
const maxWrite = 1 << 20

// readSize is the largest READ a mount asks the kernel for, given its
// spliceMax: maxWrite, or spliceMax when that is smaller, so a program's
// 1 MiB read comes as one spliced READ of nearly all of it and a small one
// that is copied, instead of one READ that is copied whole. With the
// default pipe-max-size, a cold uncapped 1 MiB dd read 4-10% faster so
// (764-785 against 714-739 MB/s, three paired runs).
func readSize(spliceMax int) int {
	if spliceMax > 0 && spliceMax < maxWrite {
		return spliceMax
	}
	return maxWrite
}

// spliceMax is the largest read that may be spliced (see tree.spliceMax),
// 0 if none may. go-fuse grows its pipe to a reply plus a page for every
// splice, and never past the system's pipe-max-size (1 MiB by default),
// whatever the process's capabilities (see spliceLimit). The pipes of a
// user without CAP_SYS_RESOURCE or CAP_SYS_ADMIN are capped together (16384
// pages by default), past which they cannot grow at all: a splice that
// cannot grow its pipe falls back to a copy after a logged error, read
// after read. So a daemon splices only with one of those capabilities, and
// only reads that fit one pipe: with the default pipe-max-size, a 1 MiB
// read is copied and smaller ones are spliced.
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
	return spliceLimit(splice.MaxPipeSize(), os.Getpagesize(), func(want int) bool {
		const setPipeSize = 1031 // F_SETPIPE_SZ
		got, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[0]), setPipeSize, uintptr(want))
		return errno == 0 && int(got) >= want
	})
}

// spliceLimit is spliceMax's choice, given pipe-max-size, the page size,
// and grow, which reports whether a pipe could be sized to want bytes.
// go-fuse refuses to grow a pipe past pipe-max-size whatever the process
// may do, so a read must fit in one with its reply's header and a page.
func spliceLimit(pipeMax, page int, grow func(want int) bool) int {
	size := min(maxWrite, pipeMax-page-fuseOutHeader) &^ (page - 1)
	if size < 64<<10 || !grow(size+fuseOutHeader+page) {
		return 0
	}
	return size
}

// spliceFits reports whether n held bytes at off fit go-fuse's pipe: it
// sizes it to the reply, its header and a page, which the kernel rounds up
// to a power of two pages, and the header takes one slot and every page
// the bytes touch another. Read at an unaligned offset, they may touch one
// page more than the size allows for: the splice would then come up short,
// and go-fuse would send the short reply as if the file ended there.
func spliceFits(off int64, n, page int) bool {
	slots := 1
	for slots*page < n+fuseOutHeader+page {
		slots *= 2
	}
	first := off / int64(page)
	last := (off + int64(n) - 1) / int64(page)
	return 1+int(last-first+1) <= slots
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

// heldResult answers a READ with bytes left in a cache's data file, already
// spliced from it into a pipe of the result's own (see loadHeld): go-fuse
// splices them on into /dev/fuse (Stateful), or, if that fails, copies them
// from the data file with Bytes; either way it calls Done once the reply
// is written, which unpins them (the pipe refers to the data file's pages,
// which must not be punched before the reply is written). Never of zero
// bytes: go-fuse writes an empty reply without calling Done.
type heldResult struct {
	h    *cache.Held
	pair *splice.Pair
	t    *tree
}

var _ fuse.ReadResult = heldResult{}

func (r heldResult) Size() int { return r.h.Len() }

// Stateful is go-fuse's interface for a result it may splice from a pipe.
func (r heldResult) Stateful() (fd uintptr, sz int) { return r.pair.ReadFd(), r.h.Len() }

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

func (r heldResult) Done() {
	splice.Done(r.pair)
	r.h.Release()
}

// loadHeld splices h's bytes from the data file into a pipe and reports
// whether all of them came. go-fuse splices a file's bytes only after it
// wrote the reply's header, and a short splice (the data file cut short
// under us, a disk error midway) then becomes a short reply, which the
// kernel takes for the end of the file: so the bytes are loaded here, where
// a shortfall can still be answered another way.
func loadHeld(h *cache.Held) (*splice.Pair, bool) {
	fd, off, n := h.Fd()
	page := os.Getpagesize()
	if !spliceFits(off, n, page) {
		return nil, false
	}
	pair, err := splice.Get()
	if err != nil {
		return nil, false
	}
	// Room for every page the bytes touch (see spliceFits).
	if err := pair.Grow(n + page); err == nil {
		got := 0
		// Each round moves at least a byte, or ends the loop.
		for got < n {
			m, err := pair.LoadFromAt(fd, n-got, off+int64(got))
			if err != nil || m <= 0 {
				break
			}
			got += m
		}
		if got == n {
			return pair, true
		}
	}
	splice.Done(pair) // empties it
	return nil, false
}

// ReadHeld is cache.Reader.ReadHeld, or ReadAt (never holding) with a done ctx.
func (c *cacheReader) ReadHeld(ctx context.Context, p []byte, off int64) (int, *cache.Held, error) {
	if ctx.Err() != nil {
		n, err := c.ReadAt(ctx, p, off)
		return n, nil, err
	}
	return c.r.ReadHeld(ctx, p, off)
}

var _ HeldReader = (*cacheReader)(nil)
