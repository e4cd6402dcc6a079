package fs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options configure a mount. The zero value is usable.
type Options struct {
	OpTimeout  time.Duration // longest a read may wait before it fails with EIO; default 30 s
	AllowOther bool          // let other users read the mount (implies default_permissions)
	Debug      bool          // log every FUSE request (go-fuse's debug output)
	Logger     *slog.Logger  // nil discards
	// Passthrough lets the kernel read a file's cached data directly once
	// the whole file is cached and verified (when the kernel allows it).
	Passthrough bool
	// NoDirectIO keeps the kernel's page cache on every handle. Without it,
	// a file opened while part of it is not cached yet is read with direct
	// I/O (see tree.directIO), when the kernel allows shared mmap of such
	// files (Linux 6.6+).
	NoDirectIO bool
	// NoSplice copies every read's bytes through this process. Without it,
	// bytes already in a cache's data file go to the kernel by splice(2)
	// (see tree.spliceMax), when the process may size a pipe to the read.
	NoSplice bool
	// Ownership shows every file and directory as owned by its UID and GID
	// (0: root) and takes Umask's bits off their modes (see owner.go).
	Ownership
	// DirCacheTime is how long a directory listing is used as it is; an
	// access after that refreshes it in the background. It is also how
	// long the kernel may keep names and attributes. Default 5 minutes.
	DirCacheTime time.Duration
	// OnlyOthersRead says no code in this process opens files in the
	// mount (the rangefs binary: only other programs read it). go-fuse's
	// start-up probe of its own mount is then skipped: a process killed
	// while it waits on its own mount can never exit. In-process tests,
	// which read their own mount, leave it false and keep the probe, which
	// stops the kernel sending POLL requests the Go runtime could starve.
	OnlyOthersRead bool
	// KernelReadAhead is how far the kernel reads ahead of a program
	// through its page cache, in bytes, rounded down to whole KiB (the
	// mount's read_ahead_kb; setting it needs root). 0 means
	// DefaultKernelReadAhead; -1 leaves the kernel's own default.
	KernelReadAhead int64
	// RootXattrs, if set, gives further attributes of the mount's root
	// directory, each shown as user.rangefs.NAME and asked for at each
	// getxattr (rangefs status reads the cache budget's use from them).
	RootXattrs func() []Xattr
}

// Server is a running mount. Its methods are safe for concurrent use.
type Server struct {
	dir    string
	server *fuse.Server
	log    *slog.Logger
	reads  *atomic.Int64 // Read calls this process served (the rest went to the kernel)
	tree   *tree
}

// Mount shows root's tree in dir and returns once the kernel has the mount.
// The root is listed on its first access, like every directory. The caller
// owns the nodes: what they hold (open caches) may be closed while mounted,
// which is how a shutdown ends waiting reads before unmounting.
func Mount(dir string, root Dir, o Options) (*Server, error) {
	if o.OpTimeout <= 0 {
		o.OpTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	if o.DirCacheTime <= 0 {
		o.DirCacheTime = 5 * time.Minute
	}
	t := &tree{opts: &o, mtime: time.Now(), reads: new(atomic.Int64), listed: map[*dirState]struct{}{},
		listings: make(chan struct{}, maxListings)}
	t.ino.Store(1) // 1 is the root
	t.ctx, t.cancel = context.WithCancel(context.Background())
	rootNode := &dirNode{d: &dirState{t: t, dir: root}}
	// Names and attributes may be kept by the kernel as long as a listing
	// is; a listing that changes tells the kernel which names to drop, and
	// a file's content never changes under one inode.
	timeout := o.DirCacheTime
	t.spliceMax = spliceMax(o.NoSplice)
	mo := fuse.MountOptions{
		FsName: "rangefs",
		Name:   "rangefs",
		// Read-only at the VFS level too, so writes fail before reaching us.
		Options:  []string{"ro"},
		MaxWrite: readSize(t.spliceMax),
		// Enough async reads in flight to keep read-ahead and parallel
		// readers fed; the kernel default of 12 starves -j 8..16.
		MaxBackground: 64,
		// Bytes in a cache's data file are spliced from it (tree.spliceMax);
		// every other result is in memory and written with writev.
		DisableSplice: t.spliceMax == 0,
		// Security labels are not ours to answer; the kernel skips asking.
		IgnoreSecurityLabels: true,
		// As root, mount(2) directly instead of through fusermount3; it
		// falls back to fusermount3 for everyone else.
		DirectMount: true,
		// Shared mmap of a direct-I/O handle (tree.directIO), through the
		// page cache; without it such an mmap fails with ENODEV.
		ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		Debug:             o.Debug,
		// Microseconds, so a request's log line can be set beside the
		// fetches it caused.
		Logger:     log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds),
		AllowOther: o.AllowOther,
	}
	if o.AllowOther {
		// Other users must still be subject to the file modes.
		mo.Options = append(mo.Options, "default_permissions")
	}
	server, err := mount(dir, rootNode, o.OnlyOthersRead, &fusefs.Options{
		MountOptions:    mo,
		EntryTimeout:    &timeout,
		NegativeTimeout: &timeout,
		UID:             o.UID,
		GID:             o.GID,
		// No AttrTimeout: go-fuse would put it in place of every zero,
		// and a file whose size is a hint must be shown with none, so the
		// next stat asks. Each node sets its own (tree.attrTimeout).
	})
	if err != nil {
		t.cancel()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	s := &Server{dir: dir, server: server, log: o.Logger, reads: t.reads, tree: t}
	// The kernel offered the capability and we asked for it, so it holds.
	// An open answered before this store is in page-cache mode, as before.
	t.directIO.Store(!o.NoDirectIO && server.KernelSettings().Flags64()&fuse.CAP_DIRECT_IO_ALLOW_MMAP != 0)
	s.setReadAhead(o.KernelReadAhead)
	return s, nil
}

// DefaultKernelReadAhead is the kernel read-ahead of a mount (see
// Options.KernelReadAhead). The daemon reads ahead itself, by what each
// handle has consumed (see cache.Reader), so the kernel's read-ahead only
// decides how much a program that reads a little is sent beyond it: small,
// so that is little.
const DefaultKernelReadAhead = 32 << 10

// setReadAhead sets the kernel's read-ahead for this mount (see
// Options.KernelReadAhead). It needs root; without it the kernel's default
// stays, and the mount works the same.
func (s *Server) setReadAhead(n int64) {
	if n < 0 {
		return
	}
	if n == 0 {
		n = DefaultKernelReadAhead
	}
	// The device comes from mountinfo, not from a stat of the mount: the
	// mounting process must never wait on its own mount (killed while a
	// request of its own is in flight, it could never exit).
	dev := mountDevice(s.dir)
	if dev == "" {
		return
	}
	path := "/sys/class/bdi/" + dev + "/read_ahead_kb"
	if err := os.WriteFile(path, []byte(strconv.FormatInt(n>>10, 10)), 0); err != nil {
		s.log.Debug("kernel read-ahead left at its default", "err", err)
	}
}

// Wait blocks until the file system is unmounted (by Unmount, fusermount3 -u
// or umount).
func (s *Server) Wait() {
	s.server.Wait()
	s.tree.cancel()
}

// Forget drops every directory listing (SIGHUP): each directory that was
// listed is listed again now, accesses meanwhile wait for the new listing,
// and the kernel is told which names changed.
func (s *Server) Forget() {
	s.tree.mu.Lock()
	dirs := make([]*dirState, 0, len(s.tree.listed))
	for d := range s.tree.listed {
		dirs = append(dirs, d)
	}
	s.tree.mu.Unlock()
	for _, d := range dirs {
		d.forget()
	}
}

// Unmount detaches the mount. When programs still hold files open, a plain
// unmount fails with EBUSY; the mount is then detached lazily so the process
// can still exit, and those programs get errors on their next access.
func (s *Server) Unmount() error {
	err := s.server.Unmount()
	if err == nil {
		return nil
	}
	s.log.Debug("unmount failed, detaching lazily", "err", err)
	return lazyUnmount(s.dir)
}

// CleanStale removes a dead mount left at dir by a killed rangefs: the kernel
// still lists it, but every request fails with ENOTCONN ("Transport endpoint
// is not connected"). A live mount at dir is an error; a plain directory is
// left alone. Attributes may still be answered from the kernel's cache after
// the daemon died, so the check lists the directory, which always asks.
func CleanStale(dir string) (bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if !isMountPoint(abs) {
		return false, nil
	}
	// A live but stopped daemon would never answer: bound the check.
	listed := make(chan error, 1)
	go func() { _, err := os.ReadDir(abs); listed <- err }()
	select {
	case err = <-listed:
	case <-time.After(5 * time.Second):
		return false, fmt.Errorf("%s is a mount point that does not answer; unmount it first (fusermount3 -uz %s)", dir, dir)
	}
	if err == nil {
		return false, fmt.Errorf("%s is already a mount point; unmount it first (fusermount3 -u %s)", dir, dir)
	}
	if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		return false, fmt.Errorf("mount point %s: %w", dir, err)
	}
	if err := lazyUnmount(abs); err != nil {
		return false, fmt.Errorf("stale mount at %s: %w (try: fusermount3 -uz %s)", dir, err, dir)
	}
	return true, nil
}

// isMountPoint reports whether dir (absolute, clean) is listed in this
// process's mount table.
func isMountPoint(dir string) bool { return mountDevice(dir) != "" }

// mountDevice returns the "major:minor" of the newest mount at dir, from
// /proc/self/mountinfo, or "" when nothing is mounted there.
func mountDevice(dir string) string {
	m, _ := MountedAt(dir)
	return m.Device
}

func lazyUnmount(dir string) error {
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err == nil {
		return nil
	}
	// Not root: fusermount3 is setuid and may unmount the caller's own mount.
	for _, prog := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(prog)
		if err != nil {
			continue
		}
		out, err := exec.Command(path, "-u", "-z", filepath.Clean(dir)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -uz: %v: %s", prog, err, out)
		}
		return nil
	}
	return errors.New("cannot unmount: not root and no fusermount3 found")
}

// mount is fusefs.Mount, without its final wait when onlyOthers: that wait
// opens a probe file in the new mount from this process (go-fuse's
// poll workaround). The kernel queues requests until the server has
// answered INIT, so a reader that comes early only waits.
func mount(dir string, root fusefs.InodeEmbedder, onlyOthers bool, o *fusefs.Options) (*fuse.Server, error) {
	if !onlyOthers {
		return fusefs.Mount(dir, root, o)
	}
	server, err := fuse.NewServer(fusefs.NewNodeFS(root, o), dir, &o.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	return server, nil
}
