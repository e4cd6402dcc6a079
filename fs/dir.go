package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// tree is what every node of one mount shares. Safe for concurrent use.
type tree struct {
	opts  *Options
	mtime time.Time     // the mount time: the mtime of nodes that have none
	reads *atomic.Int64 // Read calls this process served
	ino   atomic.Uint64 // the last inode number handed out

	// directIO says a file opened while part of its content is not cached
	// yet (Filling) gets FOPEN_DIRECT_IO: the kernel hands each read to us
	// at the size the program asked for, into the program's buffer, and
	// keeps no page-cache copy of its own. Through the page cache, the
	// kernel splits reads into 128 KiB requests and copies every reply into
	// its pages: on a cold uncapped cat, the bench measured the mount at
	// 0.67-0.80x of get with direct I/O, 0.41-0.61x without.
	// Reads of such a file are sized by the program, and our own read-ahead
	// (cache.Reader) is the only one. A file whole on local disk opens as
	// before: passthrough, else the page cache. Set once at mount: unless
	// Options.NoDirectIO, and only if the kernel allows shared mmap of
	// direct-I/O files, so mmap works the same either way.
	directIO atomic.Bool

	// spliceMax is the largest read whose bytes, when they are in a
	// cache's data file, are handed to the kernel as the file's own pages
	// (a heldResult), which go-fuse splices through a pipe into /dev/fuse:
	// one copy, by the kernel, instead of a pread out of the page cache and
	// a write back into the kernel. 0: none. Set at mount (see spliceMax).
	spliceMax int
	// held counts the reads answered with a heldResult, heldCopied those
	// of them go-fuse copied after all (its splice failed), heldReread the
	// held reads that could not be spliced whole and were read again.
	held, heldCopied, heldReread atomic.Int64

	// ctx governs background listings; it ends at unmount.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	listed map[*dirState]struct{} // directories holding a listing. Protects: listed.

	files, bytes atomic.Int64 // files and bytes of the current listings, for statfs

	listings chan struct{} // a token per listing in progress (maxListings)
}

// maxListings bounds the directory listings in progress at once.
const maxListings = 8

// inos reserves n consecutive inode numbers and returns the first.
func (t *tree) inos(n int) uint64 { return t.ino.Add(uint64(n)) - uint64(n) + 1 }

// dirState is one directory of the tree with its current listing. Its
// inodes (one at a time, or none while the kernel has forgotten it) are thin
// dirNodes pointing here, so a listing survives the kernel forgetting the
// directory.
//
// A listing is immutable once set: entries and inos are replaced whole by a
// refresh. Protects (mu): every field below it.
type dirState struct {
	t    *tree
	dir  Dir
	path string // below the mount root, for logs ("" is the root)

	inode atomic.Pointer[fusefs.Inode] // the latest inode, for kernel notifications

	mu       sync.Mutex
	entries  []Entry // sorted by name; nil until the first listing
	base     uint64  // entries[i] gets inode number base+i, unless kids says otherwise
	listedAt time.Time
	listed   bool
	forgot   bool          // Forget: the next access lists again, and waits for it
	listing  chan struct{} // closed when the listing in progress ends; nil when none
	lastErr  error         // the last listing's failure, returned to waiters
	kids     map[string]*child
	bytes    int64 // the files' sizes, as counted in t.bytes
}

// child is a name of a directory that the kernel has looked up: its inode
// number and the state shared by the inodes of that number. It is one
// allocation, as there may be a million of them.
type child struct {
	ino  uint64
	dir  *dirState // for a directory
	link Symlink   // for a symbolic link
	file fileState // for a file (dir and link nil)
}

// fileState is what the handles of one file version share.
type fileState struct {
	file   File
	parent *dirState
	name   string

	modes       openModes
	failures    atomic.Pointer[recentFailures] // made at the first timeout
	staleLogged atomic.Bool
	statLogged  atomic.Bool
	content     atomic.Pointer[string] // the Version of the last open's reader
}

// keepCache reports whether the kernel may keep the pages it holds for this
// inode at an open of content version v: only when no other version was
// opened before.
func (f *fileState) keepCache(v string) bool {
	old := f.content.Swap(&v)
	return old == nil || *old == v
}

// recentTimeouts returns the file's record of reads that timed out,
// making it when make is set.
func (f *fileState) recentTimeouts(make bool) *recentFailures {
	r := f.failures.Load()
	if r == nil && make {
		f.failures.CompareAndSwap(nil, new(recentFailures))
		r = f.failures.Load()
	}
	return r
}

func (f *fileState) path() string { return joinPath(f.parent.path, f.name) }

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// failedListingRetry is how long a failed listing is answered with its
// error before the next access tries again, so a directory whose server is
// down does not send one request per lookup.
const failedListingRetry = time.Second

// current returns the listing, listing the directory first when it has
// none (or was forgotten) and refreshing it in the background when it is
// older than DirCacheTime. Callers that wait may be interrupted by ctx;
// the listing itself goes on for the others.
func (d *dirState) current(ctx context.Context) (entries []Entry, base uint64, err error) {
	for {
		d.mu.Lock()
		if d.listed && !d.forgot {
			if time.Since(d.listedAt) >= d.t.opts.DirCacheTime && d.listing == nil {
				d.startListingLocked()
			}
			entries, base = d.entries, d.base
			d.mu.Unlock()
			return entries, base, nil
		}
		if d.listing == nil {
			if d.lastErr != nil && time.Since(d.listedAt) < failedListingRetry {
				err := d.lastErr
				d.mu.Unlock()
				return nil, 0, err
			}
			d.startListingLocked()
		}
		wait := d.listing
		d.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		d.mu.Lock()
		if !d.listed || d.forgot {
			err := d.lastErr
			d.mu.Unlock()
			if err == nil {
				continue // forgotten again while we waited
			}
			return nil, 0, err
		}
		d.mu.Unlock()
	}
}

func (d *dirState) startListingLocked() {
	done := make(chan struct{})
	d.listing = done
	go func() {
		// Bounded, so that a SIGHUP over a big tree does not start a
		// listing of every directory at once.
		var changed []string
		select {
		case d.t.listings <- struct{}{}:
			changed = d.list()
			<-d.t.listings
		case <-d.t.ctx.Done():
			d.mu.Lock()
			d.listing, d.lastErr, d.listedAt = nil, d.t.ctx.Err(), time.Now()
			d.mu.Unlock()
		}
		close(done)
		// Only now, with every waiter answered: the kernel handles an
		// entry notification under the directory's lock, which a readdir
		// or lookup waiting for this listing holds.
		if in := d.inode.Load(); in != nil {
			for _, name := range changed {
				in.NotifyEntry(name)
			}
		}
	}()
}

// list runs one listing and installs it, returning the names whose kernel
// entries are now out of date.
func (d *dirState) list() (changed []string) {
	es, err := d.dir.List(d.t.ctx)
	if err == nil && !sortedUnique(es) {
		es = append([]Entry(nil), es...)
		sortEntries(es)
		es = slices.CompactFunc(es, func(a, b Entry) bool { return a.Name == b.Name })
	}
	d.mu.Lock()
	d.listing = nil
	if err != nil {
		d.listedAt = time.Now()
		if d.listed && !d.forgot {
			// A refresh failed: keep serving the listing we have.
			d.mu.Unlock()
			d.t.opts.Logger.Warn("refreshing a directory listing failed; keeping the old one", "dir", "/"+d.path, "err", err)
			return nil
		}
		d.lastErr = err
		d.mu.Unlock()
		if !errors.Is(err, iofs.ErrNotExist) {
			d.t.opts.Logger.Warn("listing a directory failed", "dir", "/"+d.path, "err", err)
		}
		return nil
	}
	changed = d.installLocked(es)
	d.mu.Unlock()
	d.t.mu.Lock()
	d.t.listed[d] = struct{}{}
	d.t.mu.Unlock()
	return changed
}

// installLocked makes es the listing and returns the names whose kernel
// entries are out of date: names added (the kernel may hold a negative
// entry), removed, or changed in kind or version.
func (d *dirState) installLocked(es []Entry) (changed []string) {
	old := d.entries
	wasListed := d.listed
	d.entries, d.base = es, d.t.inos(max(len(es), 1))
	d.listed, d.forgot, d.lastErr, d.listedAt = true, false, nil, time.Now()
	var bytes int64
	for i := range es {
		if es[i].File != nil {
			bytes += es[i].File.Attr().Size
		}
	}
	d.t.bytes.Add(bytes - d.bytes)
	d.t.files.Add(int64(countFiles(es) - countFiles(old)))
	d.bytes = bytes
	if !wasListed {
		return d.keepEarlyKidsLocked(es)
	}
	// Walk both sorted listings together.
	i, j := 0, 0
	for i < len(old) || j < len(es) {
		switch {
		case j == len(es) || i < len(old) && old[i].Name < es[j].Name:
			changed = append(changed, old[i].Name)
			d.dropKidLocked(old[i].Name)
			i++
		case i == len(old) || es[j].Name < old[i].Name:
			changed = append(changed, es[j].Name)
			j++
		default:
			if k := d.kids[es[j].Name]; k != nil && !sameNode(k, es[j]) {
				changed = append(changed, es[j].Name)
				d.dropKidLocked(es[j].Name)
			} else if k != nil && k.dir == nil && k.link == nil {
				// Keep the File with its open handles and state: the listing
				// shows the same version.
				es[j].File = k.file.file
			}
			i++
			j++
		}
	}
	return changed
}

// keepEarlyKidsLocked checks the children made before the first listing
// (lookupEarly) against it: one the listing shows as the same node keeps
// its inode number; any other (a later duplicate replaced it, or the
// listing came from another pass) is dropped, and its name returned.
func (d *dirState) keepEarlyKidsLocked(es []Entry) (changed []string) {
	for name, k := range d.kids {
		i := sort.Search(len(es), func(i int) bool { return es[i].Name >= name })
		if i < len(es) && es[i].Name == name && sameEarlyNode(k, es[i]) {
			continue
		}
		changed = append(changed, name)
		d.dropKidLocked(name)
	}
	return changed
}

// sameEarlyNode reports whether e is the very node k was made from (an
// earlyLookuper's listing hands out the nodes its lookups did).
func sameEarlyNode(k *child, e Entry) bool {
	switch {
	case k.dir != nil:
		return e.Dir != nil && k.dir.dir == e.Dir
	case k.link != nil:
		return e.Link != nil && k.link.Target() == e.Link.Target()
	}
	return e.File != nil && k.file.file == e.File
}

// dropKidLocked forgets a child whose name is gone or changed. The kernel's
// inode, if any, keeps its state for the handles open on it.
func (d *dirState) dropKidLocked(name string) {
	if k := d.kids[name]; k != nil && k.dir != nil {
		d.t.mu.Lock()
		delete(d.t.listed, k.dir)
		d.t.mu.Unlock()
	}
	delete(d.kids, name)
}

// sameNode reports whether the kernel's inode for k still stands for e: a
// directory stays a directory (its own listing refreshes itself), a file
// stays the same version.
func sameNode(k *child, e Entry) bool {
	if k.dir != nil || e.Dir != nil {
		return k.dir != nil && e.Dir != nil
	}
	if k.link != nil || e.Link != nil {
		return k.link != nil && e.Link != nil && k.link.Target() == e.Link.Target()
	}
	return k.file.file.Version() == e.File.Version()
}

func countFiles(es []Entry) int {
	n := 0
	for i := range es {
		if es[i].File != nil {
			n++
		}
	}
	return n
}

// forget makes the directory be listed again now: accesses meanwhile wait
// for the new listing, and the kernel is told which names it changed (names
// it added too, which the kernel may hold as negative entries).
//
// The names the kernel has looked up are dropped at once, so that a lookup
// right after asks (and waits for the new listing).
func (d *dirState) forget() {
	d.mu.Lock()
	if !d.listed {
		d.mu.Unlock()
		return
	}
	d.forgot = true
	if d.listing == nil {
		d.startListingLocked()
	}
	names := make([]string, 0, len(d.kids))
	for name := range d.kids {
		names = append(names, name)
	}
	d.mu.Unlock()
	if in := d.inode.Load(); in != nil {
		for _, name := range names {
			in.NotifyEntry(name)
		}
	}
}

// earlyLookuper is an optional interface of a Dir whose listing is slow to
// complete but whose entries become known one by one (a tar.gz archive,
// listed by one pass over all of it): lookupEarly finds one name without
// waiting for List.
type earlyLookuper interface {
	// lookupEarly returns the entry called name as soon as it is known,
	// waiting within ctx while the directory is being listed; the
	// listing work it starts runs within life. An error matching
	// io/fs.ErrNotExist means the complete listing lacks name;
	// errListFirst, that the Dir cannot tell before List.
	lookupEarly(ctx, life context.Context, name string) (Entry, error)
}

// errListFirst: an earlyLookuper answers only from its listing.
var errListFirst = errors.New("listed before lookups")

// lookup returns the child called name, making its state on first use.
func (d *dirState) lookup(ctx context.Context, name string) (*child, syscall.Errno) {
	if el, ok := d.dir.(earlyLookuper); ok {
		if c, errno, answered := d.lookupEarly(ctx, el, name); answered {
			return c, errno
		}
	}
	for range 8 {
		es, base, err := d.current(ctx)
		if err != nil {
			return nil, d.listErrno(err)
		}
		i := sort.Search(len(es), func(i int) bool { return es[i].Name >= name })
		if i == len(es) || es[i].Name != name {
			return nil, syscall.ENOENT
		}
		if c, ok := d.kid(es[i], base, base+uint64(i)); ok {
			return c, 0
		}
		// A refresh was installed meanwhile: look in the new listing.
	}
	return nil, syscall.EAGAIN
}

// lookupEarly answers a lookup before the directory's first listing is
// installed, from its Dir; answered is false when the listing is to
// answer (it is installed, or the Dir cannot tell before it). A child
// made so gets an inode number of its own, which it keeps when the
// listing shows the same node (installLocked).
func (d *dirState) lookupEarly(ctx context.Context, el earlyLookuper, name string) (c *child, errno syscall.Errno, answered bool) {
	d.mu.Lock()
	listed, c := d.listed, d.kids[name]
	d.mu.Unlock()
	if listed {
		return nil, 0, false
	}
	if c != nil {
		return c, 0, true
	}
	e, err := el.lookupEarly(ctx, d.t.ctx, name)
	if errors.Is(err, errListFirst) {
		return nil, 0, false
	}
	if err != nil {
		return nil, d.listErrno(err), true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listed {
		return nil, 0, false
	}
	if c := d.kids[name]; c != nil {
		return c, 0, true
	}
	return d.newKidLocked(e, d.t.inos(1)), 0, true
}

// kid returns the child state of e, which is entry ino-base of the listing
// with that base; false when that listing is no longer current.
func (d *dirState) kid(e Entry, base, ino uint64) (*child, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.base != base {
		return nil, false
	}
	if c := d.kids[e.Name]; c != nil {
		return c, true
	}
	return d.newKidLocked(e, ino), true
}

func (d *dirState) newKidLocked(e Entry, ino uint64) *child {
	c := &child{ino: ino}
	switch {
	case e.Dir != nil:
		c.dir = &dirState{t: d.t, dir: e.Dir, path: joinPath(d.path, e.Name)}
	case e.Link != nil:
		c.link = e.Link
	default:
		c.file = fileState{file: e.File, parent: d, name: e.Name}
	}
	if d.kids == nil {
		d.kids = map[string]*child{}
	}
	d.kids[e.Name] = c
	return c
}

func (d *dirState) listErrno(err error) syscall.Errno {
	switch {
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	}
	return syscall.EIO
}

// dirNode is an inode of a directory.
type dirNode struct {
	fusefs.Inode
	d *dirState
}

var (
	_ = (fusefs.NodeOnAdder)((*dirNode)(nil))
	_ = (fusefs.NodeLookuper)((*dirNode)(nil))
	_ = (fusefs.NodeReaddirer)((*dirNode)(nil))
	_ = (fusefs.NodeGetattrer)((*dirNode)(nil))
	_ = (fusefs.NodeStatfser)((*dirNode)(nil))
	_ = (fusefs.NodeGetxattrer)((*dirNode)(nil))
	_ = (fusefs.NodeListxattrer)((*dirNode)(nil))
)

// OnAdd is called for the root only: other dirNodes are registered when
// they are made.
func (n *dirNode) OnAdd(ctx context.Context) { n.d.inode.Store(n.EmbeddedInode()) }

func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	c, errno := n.d.lookup(ctx, name)
	if errno != 0 {
		return nil, errno
	}
	if live := n.GetChild(name); live != nil && live.StableAttr().Ino == c.ino {
		n.fillEntry(c, out)
		return live, 0
	}
	var in *fusefs.Inode
	switch {
	case c.dir != nil:
		in = n.NewInode(ctx, &dirNode{d: c.dir}, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: c.ino})
		c.dir.inode.Store(in)
	case c.link != nil:
		in = n.NewInode(ctx, &linkNode{link: c.link, t: n.d.t}, fusefs.StableAttr{Mode: syscall.S_IFLNK, Ino: c.ino})
	default:
		in = n.NewInode(ctx, &fileNode{st: &c.file}, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: c.ino})
	}
	n.fillEntry(c, out)
	return in, 0
}

// fillEntry answers a lookup from memory: a lookup never waits for a probe
// (readdirplus looks up every name), so a file whose size is only a hint is
// shown with attributes the kernel must ask for again at the next stat.
func (n *dirNode) fillEntry(c *child, out *fuse.EntryOut) {
	if c.dir != nil {
		dirAttr(&out.Attr, c.dir, n.d.t)
		out.SetAttrTimeout(n.d.t.opts.DirCacheTime)
		return
	}
	if c.link != nil {
		linkAttr(&out.Attr, c.link, n.d.t)
		out.SetAttrTimeout(n.d.t.opts.DirCacheTime)
		return
	}
	a := c.file.file.Attr()
	fileAttr(&out.Attr, a, c.file.file.Stats(), n.d.t)
	if a.Exact {
		out.SetAttrTimeout(n.d.t.opts.DirCacheTime)
	}
}

func (n *dirNode) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	es, base, err := n.d.current(ctx)
	if err != nil {
		return nil, n.d.listErrno(err)
	}
	n.d.mu.Lock()
	inos := map[string]uint64{}
	if n.d.base == base {
		for name, c := range n.d.kids {
			inos[name] = c.ino
		}
	}
	n.d.mu.Unlock()
	return &dirStream{es: es, base: base, kids: inos}, 0
}

func (n *dirNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, n.d, n.d.t)
	out.SetTimeout(n.d.t.opts.DirCacheTime)
	return 0
}

func dirAttr(a *fuse.Attr, d *dirState, t *tree) {
	a.Mode = syscall.S_IFDIR | t.opts.mode(0o555)
	a.Nlink = 2
	m := d.dir.Mtime()
	if m.IsZero() {
		m = t.mtime
	}
	setTimes(a, m)
}

// Statfs reports the files and bytes of the listings held, so df shows
// something meaningful without asking the network.
func (n *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = uint64((n.d.t.bytes.Load() + bsize - 1) / bsize)
	out.Files = uint64(n.d.t.files.Load())
	out.NameLen = 255
	return 0
}

// A directory shows whether it holds a listing, so rangefs status can walk
// what is known without listing the rest of a remote tree.
const xattrListed = xattrPrefix + "listed"

func (n *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr != xattrListed {
		for _, x := range n.rootXattrs() {
			if xattrPrefix+x.Name == attr {
				return copyOut(dest, x.Value)
			}
		}
		return 0, syscall.ENODATA
	}
	n.d.mu.Lock()
	v := "0"
	if n.d.listed && !n.d.forgot {
		v = "1"
	}
	n.d.mu.Unlock()
	return copyOut(dest, v)
}

func (n *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	list := xattrListed + "\x00"
	for _, x := range n.rootXattrs() {
		list += xattrPrefix + x.Name + "\x00"
	}
	return copyOut(dest, list)
}

// rootXattrs returns Options.RootXattrs for the mount's root, nil for
// every other directory.
func (n *dirNode) rootXattrs() []Xattr {
	if n.d.path != "" || n.d.t.opts.RootXattrs == nil {
		return nil
	}
	return n.d.t.opts.RootXattrs()
}

// dirStream hands out one listing. Names the kernel has looked up keep the
// inode numbers it knows them by.
type dirStream struct {
	es   []Entry
	base uint64
	kids map[string]uint64
	i    int
}

func (s *dirStream) HasNext() bool { return s.i < len(s.es) }

func (s *dirStream) Next() (fuse.DirEntry, syscall.Errno) {
	e := s.es[s.i]
	ino, ok := s.kids[e.Name]
	if !ok {
		ino = s.base + uint64(s.i)
	}
	s.i++
	mode := uint32(syscall.S_IFREG)
	switch {
	case e.Dir != nil:
		mode = syscall.S_IFDIR
	case e.Link != nil:
		mode = syscall.S_IFLNK
	}
	return fuse.DirEntry{Name: e.Name, Mode: mode, Ino: ino}, 0
}

func (s *dirStream) Close() {}

func sortEntries(es []Entry) {
	slices.SortStableFunc(es, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
}

func sortedUnique(es []Entry) bool {
	for i := 1; i < len(es); i++ {
		if es[i-1].Name >= es[i].Name {
			return false
		}
	}
	return true
}

// linkNode is an inode of a symbolic link.
type linkNode struct {
	fusefs.Inode
	link Symlink
	t    *tree
}

var (
	_ = (fusefs.NodeReadlinker)((*linkNode)(nil))
	_ = (fusefs.NodeGetattrer)((*linkNode)(nil))
)

func (n *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(n.link.Target()), 0
}

func (n *linkNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	linkAttr(&out.Attr, n.link, n.t)
	out.SetTimeout(n.t.opts.DirCacheTime)
	return 0
}

func linkAttr(a *fuse.Attr, l Symlink, t *tree) {
	a.Mode = syscall.S_IFLNK | 0o777
	a.Nlink = 1
	a.Size = uint64(len(l.Target()))
	m := l.Mtime()
	if m.IsZero() {
		m = t.mtime
	}
	setTimes(a, m)
}
