package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"rangefs/cache"
)

// fileNode is an inode of a file: a thin handle on the fileState its
// version shares.
type fileNode struct {
	fusefs.Inode
	st *fileState
}

var (
	_ = (fusefs.NodeGetattrer)((*fileNode)(nil))
	_ = (fusefs.NodeOpener)((*fileNode)(nil))
	_ = (fusefs.NodeGetxattrer)((*fileNode)(nil))
	_ = (fusefs.NodeListxattrer)((*fileNode)(nil))
)

func (n *fileNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := n.st.file
	a := f.Attr()
	if !a.Exact {
		exact, err := f.Stat(ctx)
		switch {
		case err == nil:
			a = exact
		case errors.Is(err, context.Canceled):
			return syscall.EINTR
		default:
			if n.st.statLogged.CompareAndSwap(false, true) {
				n.st.parent.t.opts.Logger.Warn("stat: showing the listing's size hint", "file", n.st.path(), "err", err)
			}
		}
	}
	fileAttr(&out.Attr, a, f.Stats(), n.st.parent.t)
	if a.Exact {
		// A hint is shown with no caching, so the next stat asks again.
		out.SetTimeout(n.st.parent.t.opts.DirCacheTime)
	}
	return 0
}

func fileAttr(out *fuse.Attr, a Attr, st Stats, t *tree) {
	out.Mode = syscall.S_IFREG | t.opts.mode(0o444)
	out.Nlink = 1
	out.Size = uint64(max(a.Size, 0))
	// Blocks counts what is on local disk, so `du` shows how much is cached.
	out.Blocks = uint64((st.CachedBytes + 511) / 512)
	// st_blksize is what stdio and Python size their read buffers by: at
	// 1 MiB, python zipfile's small reads became 1 MiB reads (15.7 MiB
	// fetched for 3 members); at 64 KiB, what a small read fetches (one
	// checksum block), 2.7 MiB. Sequential speed comes from the kernel's
	// read-ahead, not from this.
	out.Blksize = 64 << 10
	m := a.Mtime
	if m.IsZero() {
		m = t.mtime
	}
	setTimes(out, m)
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	r, err := n.st.file.Open(ctx)
	if err != nil {
		return nil, 0, n.st.fail(err)
	}
	h := &fileHandle{node: n.st, reader: r, userDirect: flags&syscall.O_DIRECT != 0}
	// KEEP_CACHE: the content is pinned by its validator, so the kernel may
	// keep pages across opens (go-fuse drops it for passthrough, where there
	// are no pages), unless this open reads another version than the last
	// one did: without the flag the kernel drops the old version's pages.
	var open uint32
	if n.st.keepCache(r.Version()) {
		open = fuse.FOPEN_KEEP_CACHE
	}
	t := n.st.parent.t
	if n.st.modes.open(func() bool { return t.opts.Passthrough && r.PassthroughPath() != "" }) {
		r.PassthroughPath() // pins the file until Close, also when joining another handle's passthrough
		return &passthroughHandle{fileHandle: h, pass: true}, open, 0
	}
	if f, ok := r.(Filling); ok && t.directIO.Load() && f.Filling() {
		// Counted as ordinary in modes: until its first shared mmap the
		// kernel sees no I/O mode at all, and after it a cached one.
		open |= fuse.FOPEN_DIRECT_IO
	}
	return h, open, 0
}

// passthroughHandle offers the kernel the cache's data file, so reads of a
// complete, verified file bypass this process (FUSE passthrough, Linux 6.9+,
// needs CAP_SYS_ADMIN). go-fuse asks for the descriptor once per file and
// falls back to Read when the kernel refuses, so the embedded fileHandle
// stays ready to serve.
type passthroughHandle struct {
	*fileHandle
	mu   sync.Mutex
	fd   int  // 0 (none) or the descriptor given to the kernel, closed at Release
	pass bool // still counted as passthrough (see openModes.backing)
}

var (
	_ = (fusefs.FilePassthroughFder)((*passthroughHandle)(nil))
	_ = (fusefs.FileReleaser)((*passthroughHandle)(nil))
)

// PassthroughFd is called by go-fuse, one open at a time, when no backing
// file of this node is registered with the kernel.
func (h *passthroughHandle) PassthroughFd() (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fd, ok := h.node.modes.backing(func() (int, bool) {
		path := h.reader.PassthroughPath()
		if path == "" {
			return 0, false
		}
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		return fd, err == nil
	})
	if !ok {
		h.pass = false
		return 0, false
	}
	h.fd = fd
	return fd, true
}

// Release closes our descriptor; the kernel holds its own reference to the
// backing file for as long as it needs it.
func (h *passthroughHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd > 0 {
		syscall.Close(h.fd)
		h.fd = 0
	}
	h.node.modes.release(h.pass)
	h.close()
	return 0
}

// Extended attributes expose the cache state of each file.
const xattrPrefix = "user.rangefs."

var xattrNames = []string{"url", "etag", "last_modified", "size", "chunk_size", "cached_bytes", "chunks"}

func xattrOf(st Stats, name string) (string, bool) {
	switch name {
	case "url":
		return st.URL, true
	case "etag":
		return st.ETag, true
	case "last_modified":
		return st.LastModified, true
	case "size":
		return strconv.FormatInt(st.Size, 10), true
	case "chunk_size":
		return strconv.FormatInt(st.ChunkSize, 10), true
	case "cached_bytes":
		return strconv.FormatInt(st.CachedBytes, 10), true
	case "chunks":
		return strconv.FormatInt(st.Present, 10) + "/" + strconv.FormatInt(st.Chunks, 10), true
	}
	for _, x := range st.More {
		if x.Name == name {
			return x.Value, true
		}
	}
	return "", false
}

func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if len(attr) <= len(xattrPrefix) || attr[:len(xattrPrefix)] != xattrPrefix {
		return 0, syscall.ENODATA
	}
	v, ok := xattrOf(n.st.file.Stats(), attr[len(xattrPrefix):])
	if !ok {
		return 0, syscall.ENODATA
	}
	return copyOut(dest, v)
}

func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var list []byte
	for _, name := range xattrNames {
		list = append(list, xattrPrefix+name...)
		list = append(list, 0)
	}
	for _, x := range n.st.file.Stats().More {
		list = append(list, xattrPrefix+x.Name...)
		list = append(list, 0)
	}
	return copyOut(dest, string(list))
}

// copyOut follows getxattr(2): an empty dest asks for the size; a short one is ERANGE.
func copyOut(dest []byte, v string) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// fileHandle is one open(2) of a file, reading through its own Reader
// (which keeps, for a cached file, the sequential detector that drives
// read-ahead).
type fileHandle struct {
	node       *fileState
	reader     Reader
	userDirect bool // opened with O_DIRECT: an interrupt ends its reads (see followInterrupt)
	closeOnce  sync.Once
}

// close closes the reader once, at release.
func (h *fileHandle) close() {
	h.closeOnce.Do(func() {
		if err := h.reader.Close(); err != nil {
			h.node.parent.t.opts.Logger.Warn("closing a file", "file", h.node.path(), "err", err)
		}
	})
}

var (
	_ = (fusefs.FileReader)((*fileHandle)(nil))
	_ = (fusefs.FileReleaser)((*fileHandle)(nil))
)

// Release uncounts an ordinary handle (see openModes) and closes its Reader,
// so read-ahead and prefetch stop following it.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.close()
	h.node.modes.release(false)
	return 0
}

func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.node.parent.t.reads.Add(1)
	end := off + int64(len(dest))
	if ago, ok := h.node.recentTimeouts(false).since(off, end, time.Now()); ok {
		return h.readNoWait(ctx, dest, off, ago)
	}
	// No read waits longer than the op timeout, whatever the server does.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.node.parent.t.opts.OpTimeout)
	defer cancel()
	// The FUSE context is cancelled on an interrupt, which may end only
	// this wait (see followInterrupt).
	var tid uint32
	if c, ok := fuse.FromContext(ctx); ok {
		tid = c.Pid
	}
	defer followInterrupt(ctx, tid, h.userDirect, tctx, cancel)()
	var n int
	var held *cache.Held
	var err error
	// A read that could not be spliced whole (see spliceFits) is copied from
	// the start: held, it would be read a second time.
	if hr, ok := h.reader.(HeldReader); ok && len(dest) <= h.node.parent.t.spliceMax && spliceFits(off, len(dest), os.Getpagesize()) {
		n, held, err = hr.ReadHeld(tctx, dest, off)
	} else {
		n, err = h.reader.ReadAt(tctx, dest, off)
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) && errors.Is(tctx.Err(), context.DeadlineExceeded) {
		h.node.recentTimeouts(true).add(off, end, time.Now())
	}
	if held != nil {
		// Held bytes come only with nil or io.EOF (a read to the end of
		// the file), and are never none.
		if pair, ok := loadHeld(held); ok {
			h.node.parent.t.held.Add(1)
			return heldResult{held, pair, h.node.parent.t}, 0
		}
		// Not all of them could be spliced: read them again, copied, which
		// finds what went wrong with the data file (and then falls back
		// to the network), or copies bytes that did not fit go-fuse's pipe
		// after all (a read cut short by the end of the file).
		held.Release()
		h.node.parent.t.heldReread.Add(1)
		n, err = h.reader.ReadAt(tctx, dest, off)
	}
	if errno := h.node.fail(err); errno != 0 {
		return nil, errno
	}
	return readResult(dest[:n]), 0
}

// interruptGrace is how long a read of an O_DIRECT handle goes on waiting
// after the kernel said its caller was interrupted (see followInterrupt).
// Every signal interrupts a FUSE request, also a handled one with SA_RESTART
// (an interval timer, a runtime's preemption), and the kernel cannot restart
// a read the daemon failed with EINTR, so failing at once would hand such
// programs EINTR whenever the network takes longer than their timer's
// period. Within the grace the bytes usually arrive and the read completes;
// a Ctrl-C the program handles still ends a read on a silent server well
// within a second.
const interruptGrace = 250 * time.Millisecond

// readNoWait answers a read of bytes whose last read timed out ago: with
// them if they have arrived since, else with EIO at once, so that the kernel's
// retry of a failed read-ahead does not wait a second op timeout.
func (h *fileHandle) readNoWait(ctx context.Context, dest []byte, off int64, ago time.Duration) (fuse.ReadResult, syscall.Errno) {
	// It never waits, so an interrupt changes nothing: the answer is the
	// bytes or EIO, the truth about them.
	expired, cancel := context.WithDeadline(context.WithoutCancel(ctx), time.Now())
	defer cancel()
	n, err := h.reader.ReadAt(expired, dest, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("a read of these bytes timed out %v ago: %w", ago.Round(time.Millisecond), err)
	}
	if errno := h.node.fail(err); errno != 0 {
		return nil, errno
	}
	return readResult(dest[:n]), 0
}

// readResult wraps bytes for the kernel. A vector result is written to
// /dev/fuse with one writev; go-fuse's plain data result would be copied
// through a splice pipe first.
func readResult(b []byte) fuse.ReadResult {
	return fuse.ReadResultVector([][]byte{b})
}

// fail maps err to a status and logs it: every EIO with its cause, a
// remote change only once per file (every later read repeats it).
func (n *fileState) fail(err error) syscall.Errno {
	errno := errnoOf(err)
	switch {
	case errno == 0, errno == syscall.EINTR:
	case errno == syscall.ESTALE:
		if n.staleLogged.CompareAndSwap(false, true) {
			n.parent.t.opts.Logger.Warn("the remote file changed; reads of this version fail with ESTALE (a file of a listing shows the new version once its directory is listed again; a URL given on the command line needs a remount)",
				"file", n.path(), "err", err)
		}
	case errno == syscall.EOPNOTSUPP, errno == syscall.ENOENT:
		n.parent.t.opts.Logger.Warn("open failed", "file", n.path(), "errno", errno.Error(), "err", err)
	default:
		n.parent.t.opts.Logger.Warn("read failed", "file", n.path(), "errno", errno.Error(), "err", err)
	}
	return errno
}

func setTimes(a *fuse.Attr, t time.Time) {
	a.SetTimes(&t, &t, &t)
}

// discardLogger is used when the caller gives none.
var discardLogger = slog.New(slog.DiscardHandler)
