package fs

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"rangefs/cache"
	"rangefs/fs/archive"
)

// This file shows archives (zip, tar, tar.gz) as directories of their
// members, built over any File: the archive is read through the File's own
// Reader, so its bytes come from the chunk cache like any other read.
// Stored members (tar members, stored zip members) are served as byte
// ranges of a Reader of the archive opened for the member's handle, so
// read-ahead and prefetch work for them as for a plain file; compressed
// members are inflated by an archive.Reader per handle.

// ArchiveOptions configure the directories WithArchives and ArchiveDir
// make. The zero value is usable.
type ArchiveOptions struct {
	// Limits bound what one archive may cost (archive.Limits; zero fields
	// take rangefs's defaults, see archiveLimits).
	Limits archive.Limits
	// OpTimeout bounds each read of the archive that is not a member
	// handle's own read (listing, headers, inflating); default 30 s.
	OpTimeout time.Duration
	Logger    *slog.Logger // nil discards
	// Indexing, if set, follows the archives' tar.gz indexing passes (for
	// status); one may serve many directories.
	Indexing *ArchiveIndexing
}

// ArchiveIndexing follows the tar.gz indexing passes of the archive
// directories whose ArchiveOptions name it: each pass from its start
// until it completes, or, when it failed, until the next pass of that
// archive starts. Safe for concurrent use; the zero value is not usable.
type ArchiveIndexing struct {
	mu     sync.Mutex
	passes map[*archiveDir]*indexingPass // Protects: passes.
}

type indexingPass struct {
	name string
	a    *archive.Archive // while it runs
	last ArchivePass      // once it failed
}

// ArchivePass is one tar.gz indexing pass, running or failed.
type ArchivePass struct {
	Name        string // the archive's path below the directory given WithArchives
	Done, Total int64  // archive bytes the pass has read, of the archive's size
	Members     int    // entries indexed so far, directories included
	Err         error  // why the pass failed; nil while it runs
}

// NewArchiveIndexing returns an empty ArchiveIndexing.
func NewArchiveIndexing() *ArchiveIndexing {
	return &ArchiveIndexing{passes: map[*archiveDir]*indexingPass{}}
}

// Passes returns the passes running or failed, sorted by name.
func (x *ArchiveIndexing) Passes() []ArchivePass {
	x.mu.Lock()
	out := make([]ArchivePass, 0, len(x.passes))
	for _, p := range x.passes {
		if p.a == nil {
			out = append(out, p.last)
			continue
		}
		done, total := p.a.Progress()
		out = append(out, ArchivePass{Name: p.name, Done: done, Total: total, Members: p.a.Len()})
	}
	x.mu.Unlock()
	slices.SortFunc(out, func(a, b ArchivePass) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (x *ArchiveIndexing) started(d *archiveDir, a *archive.Archive) {
	if x == nil {
		return
	}
	x.mu.Lock()
	x.passes[d] = &indexingPass{name: d.name, a: a}
	x.mu.Unlock()
}

// ended records the end of d's pass over a: forgotten when err is nil,
// kept with err otherwise (the numbers only, not the listing).
func (x *ArchiveIndexing) ended(d *archiveDir, a *archive.Archive, err error) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.passes[d]
	if p == nil || p.a != a {
		return
	}
	if err == nil {
		delete(x.passes, d)
		return
	}
	done, total := a.Progress()
	p.last = ArchivePass{Name: p.name, Done: done, Total: total, Members: a.Len(), Err: err}
	p.a = nil
}

// IndexStore is an optional interface of a File: a place beside the file's
// local copy where an archive directory keeps its listing (and a tar.gz's
// checkpoints), so that the next mount lists the archive without reading
// it. name is the archive kind ("zip", "tar", "tar.gz"). LoadIndex returns
// an error matching io/fs.ErrNotExist when nothing is kept.
type IndexStore interface {
	LoadIndex(name string) ([]byte, error)
	SaveIndex(name string, b []byte) error
}

// RangeReader is an optional interface of a File: ReadRange reads p at off
// straight from the origin, storing nothing, like io.ReaderAt. An archive
// directory uses it while listing a zip or a tar for the small reads the
// cache does not hold yet (a tar header every member), which would
// otherwise each fetch a whole cache block and set off read-ahead.
type RangeReader interface {
	ReadRange(ctx context.Context, p []byte, off int64) (int, error)
}

// maxDirectRead is the largest listing read sent through a RangeReader.
const maxDirectRead = 64 << 10

// CacheFileOf returns the cache.File that a File made by CacheFile shows.
func CacheFileOf(f File) (*cache.File, bool) {
	c, ok := f.(*cacheFile)
	if !ok {
		return nil, false
	}
	return c.f, true
}

// ArchiveKind reports the archive format a file name stands for: ".zip",
// ".tar", ".tar.gz" and ".tgz", in any case; 0 for any other name.
func ArchiveKind(name string) archive.Kind {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".zip"):
		return archive.Zip
	case strings.HasSuffix(n, ".tar"):
		return archive.Tar
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"):
		return archive.TarGz
	}
	return 0
}

// WithArchives returns d with every file whose name is an archive's
// (ArchiveKind) shown as a directory of the same name holding its
// members, in d and in every directory below it.
func WithArchives(d Dir, o ArchiveOptions) Dir {
	return withArchives(d, "", o.withDefaults())
}

// withArchives is WithArchives for the directory at path dir below the
// one WithArchives was given.
func withArchives(d Dir, dir string, o ArchiveOptions) Dir {
	return &archivesDir{d: d, path: dir, o: o, kids: map[string]archivesKid{}}
}

// ArchiveEntry returns e with an archive file made the directory of its
// members, and a directory made to do the same below it (WithArchives);
// any other entry is returned as it is.
func ArchiveEntry(e Entry, o ArchiveOptions) Entry {
	switch {
	case e.Dir != nil:
		e.Dir = WithArchives(e.Dir, o)
	case e.File != nil:
		if k := ArchiveKind(e.Name); k != 0 {
			e.Dir, e.File = ArchiveDir(e.File, e.Name, k, o), nil
		}
	}
	return e
}

func (o ArchiveOptions) withDefaults() ArchiveOptions {
	if o.OpTimeout <= 0 {
		o.OpTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	o.Limits = archiveLimits(o.Limits)
	return o
}

// archiveLimits fills what the caller left zero with rangefs's defaults:
// tighter than the archive package's, so that a mount stays small (a
// central directory of 16 MiB is about 130,000 members; 256 checkpoints
// are 8 MiB of windows).
func archiveLimits(l archive.Limits) archive.Limits {
	if l.MaxDirectoryBytes <= 0 {
		l.MaxDirectoryBytes = 16 << 20
	}
	if l.MaxCheckpoints <= 1 {
		l.MaxCheckpoints = 256
	}
	return l
}

// archivesDir is a Dir whose archive files are shown as directories. It
// keeps the nodes it made, so a refresh that lists the same archive (same
// Version) keeps its opened listing.
type archivesDir struct {
	d    Dir
	path string // below the directory given WithArchives, for logs and status ("" for it)
	o    ArchiveOptions

	mu   sync.Mutex
	kids map[string]archivesKid // by name. Protects: kids.
}

type archivesKid struct {
	version string // of an archive file; "" for a directory
	dir     Dir
}

var _ Dir = (*archivesDir)(nil)

func (w *archivesDir) Mtime() time.Time { return w.d.Mtime() }

func (w *archivesDir) List(ctx context.Context) ([]Entry, error) {
	es, err := w.d.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(es))
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := make(map[string]bool, len(es))
	for i, e := range es {
		out[i] = e
		switch {
		case e.Dir != nil:
			k, ok := w.kids[e.Name]
			if !ok || k.version != "" {
				k = archivesKid{dir: withArchives(e.Dir, joinPath(w.path, e.Name), w.o)}
			}
			w.kids[e.Name] = k
			out[i].Dir = k.dir
			seen[e.Name] = true
		case e.File != nil && ArchiveKind(e.Name) != 0:
			v := e.File.Version()
			k, ok := w.kids[e.Name]
			if !ok || k.version != v {
				k = archivesKid{version: v, dir: ArchiveDir(e.File, joinPath(w.path, e.Name), ArchiveKind(e.Name), w.o)}
			}
			w.kids[e.Name] = k
			out[i].Dir, out[i].File = k.dir, nil
			seen[e.Name] = true
		}
	}
	for name := range w.kids {
		if !seen[name] {
			delete(w.kids, name)
		}
	}
	return out, nil
}

// ArchiveDir shows the archive f, of the given kind, as the directory of
// its members. The archive is opened (its listing read, or loaded from f's
// IndexStore) on the first listing; a failed open is tried again at the
// next. A tar.gz is opened at the first lookup too, and its members are
// found while its indexing pass runs (lookupEarly). name is for logs and
// status.
func ArchiveDir(f File, name string, kind archive.Kind, o ArchiveOptions) Dir {
	o = o.withDefaults()
	return &archiveDir{f: f, name: name, kind: kind, o: o}
}

// archiveDir is the root of one archive.
type archiveDir struct {
	f    File
	name string
	kind archive.Kind
	o    ArchiveOptions

	mu       sync.Mutex   // held while opening. Protects: cur, lastErr, failedAt.
	cur      *archiveOpen // the archive opened or being indexed; nil before, and after a failed open
	lastErr  error        // the last failed open, answered for failedListingRetry
	failedAt time.Time

	hidden  atomic.Bool // a listing hid a special file (logged once)
	escaped atomic.Bool // a listing hid a symlink that leads out of the archive (logged once)

	linkMu sync.Mutex        // Protects: links.
	links  map[string]string // zip symlink targets read so far, by member name
}

// archiveOpen is one opening of an archive: its listing (a tar.gz's grows
// while its pass runs) and the Reader it is read through.
type archiveOpen struct {
	a       *archive.Archive
	r       Reader
	version string // r's Version
	index   string // the index version (indexVersion) it was opened at
	loaded  bool   // from the IndexStore
	start   time.Time

	once sync.Once
	err  error // set once the listing is complete: why it is unusable (nil: usable)

	mu    sync.Mutex           // Protects: early.
	early map[string]earlyNode // the nodes lookupEarly made, by member name
}

// earlyNode is the node made for a member found while its archive's pass
// ran. The listing shows the same node for the same entry, so that the
// directory keeps the inode the kernel already knows.
type earlyNode struct {
	e    archive.Entry
	node Entry
}

var (
	_ Dir           = (*archiveDir)(nil)
	_ earlyLookuper = (*archiveDir)(nil)
)

func (d *archiveDir) Mtime() time.Time { return d.f.Attr().Mtime }

func (d *archiveDir) List(ctx context.Context) ([]Entry, error) {
	o, err := d.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.complete(ctx, o); err != nil {
		return nil, err
	}
	return d.entries(o, "")
}

// lookupEarly finds a member of a tar.gz without waiting for its pass to
// end (starting the pass within life when none runs). A zip or a tar is
// listed whole before it answers (errListFirst).
func (d *archiveDir) lookupEarly(ctx, life context.Context, name string) (Entry, error) {
	if d.kind != archive.TarGz {
		return Entry{}, errListFirst
	}
	o, err := d.open(life)
	if err != nil {
		return Entry{}, err
	}
	return d.lookupIn(ctx, o, name)
}

// lookupIn finds the member called name (a full member name) in o, waiting
// within ctx for a pass that has not listed it yet. A member the listing
// would not show (a special file, a symlink leading out, a damaged one)
// is not found.
func (d *archiveDir) lookupIn(ctx context.Context, o *archiveOpen, name string) (Entry, error) {
	e, ok, err := o.a.WaitLookup(ctx, name)
	if err != nil {
		return Entry{}, fmt.Errorf("archive %s: waiting for the indexing pass to reach %s: %w", d.name, name, err)
	}
	if !ok {
		// The pass has ended; one that failed on a read answers EIO.
		if err := d.complete(ctx, o); err != nil {
			return Entry{}, err
		}
		return Entry{}, &iofs.PathError{Op: "lookup", Path: name, Err: iofs.ErrNotExist}
	}
	if n, ok := o.earlyNode(e); ok {
		return n, nil
	}
	if e.Mode&iofs.ModeSymlink != 0 {
		// Whether a link stays inside depends on the links its target
		// passes through, which a pass still running may list later.
		if err := d.complete(ctx, o); err != nil {
			return Entry{}, err
		}
		if e, ok = o.a.Lookup(name); !ok {
			return Entry{}, &iofs.PathError{Op: "lookup", Path: name, Err: iofs.ErrNotExist}
		}
	}
	node, _, err := d.node(o, e)
	if err != nil {
		return Entry{}, err
	}
	if node.Name == "" {
		return Entry{}, &iofs.PathError{Op: "lookup", Path: name, Err: iofs.ErrNotExist}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if n, ok := o.early[e.Name]; ok && n.e == e {
		return n.node, nil // made meanwhile by another lookup
	}
	if o.early == nil {
		o.early = map[string]earlyNode{}
	}
	o.early[e.Name] = earlyNode{e: e, node: node}
	return node, nil
}

// earlyNode returns the node a lookup made for entry e while the pass ran.
func (o *archiveOpen) earlyNode(e archive.Entry) (Entry, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, ok := o.early[e.Name]
	return n.node, ok && n.e == e
}

// open returns the archive opened, or being indexed (a tar.gz), opening
// it on first use. ctx bounds the open, and is also the life of the
// archive's Reader and of a tar.gz's pass (the tree's background context,
// which ends at unmount).
func (d *archiveDir) open(ctx context.Context) (*archiveOpen, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil {
		return d.cur, nil
	}
	if d.lastErr != nil && time.Since(d.failedAt) < failedListingRetry {
		return nil, d.lastErr
	}
	o, err := d.openLocked(ctx)
	if err != nil {
		d.lastErr, d.failedAt = err, time.Now()
		return nil, err
	}
	d.cur, d.lastErr = o, nil
	return o, nil
}

func (d *archiveDir) openLocked(ctx context.Context) (*archiveOpen, error) {
	size, err := d.size(ctx)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", d.name, err)
	}
	r, err := d.f.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", d.name, err)
	}
	ra := &ctxReaderAt{r: r, ctx: ctx, timeout: d.o.OpTimeout, open: d.f.Open}
	if rr, ok := d.f.(RangeReader); ok && d.kind != archive.TarGz {
		// A tar.gz pass reads everything once: through the cache, with
		// read-ahead, so that member reads find it there.
		ra.direct = rr
	}
	o := &archiveOpen{r: r, version: r.Version(), index: d.indexVersion(size), start: time.Now()}
	o.a, o.loaded, err = d.load(ctx, ra, size, o.index)
	ra.listed.Store(true)
	if err != nil {
		r.Close()
		return nil, err
	}
	if d.kind == archive.TarGz && !o.loaded {
		d.o.Indexing.started(d, o.a)
		// Whether or not a listing waits for it, the pass's end is
		// logged, its index saved, and its status updated.
		go d.complete(ctx, o)
	}
	return o, nil
}

func (d *archiveDir) size(ctx context.Context) (int64, error) {
	if at := d.f.Attr(); at.Exact {
		return at.Size, nil
	}
	at, err := d.f.Stat(ctx)
	return at.Size, err
}

// load reads the archive's listing: from the IndexStore when it holds
// one for this version, else from the archive. A tar.gz's pass is started
// and runs on within ctx; complete finishes the listing.
func (d *archiveDir) load(ctx context.Context, ra io.ReaderAt, size int64, version string) (a *archive.Archive, loaded bool, err error) {
	if store, ok := d.f.(IndexStore); ok {
		if a, err := d.loadIndex(store, version, ra, size); err == nil {
			return a, true, nil
		} else if !errors.Is(err, iofs.ErrNotExist) {
			d.o.Logger.Warn("archive: the saved index is not usable; listing the archive again", "archive", d.name, "err", err)
		}
	}
	switch d.kind {
	case archive.Zip:
		a, err = archive.OpenZip(ra, size, d.o.Limits)
	case archive.Tar:
		a, err = archive.OpenTar(ra, size, d.o.Limits)
	case archive.TarGz:
		a = archive.IndexTarGz(ctx, ra, size, d.o.Limits)
	default:
		err = fmt.Errorf("unknown archive kind %v", d.kind)
	}
	if err != nil {
		return nil, false, fmt.Errorf("archive %s: %w", d.name, err)
	}
	return a, false, nil
}

// complete waits, within ctx, for o's listing to be complete (a tar.gz's
// pass to end), and reports whether it is usable. The first caller to see
// it complete logs it and saves it in the IndexStore; when the archive
// could not be read (network, timeout), o is dropped, and the next open
// lists it again rather than keep a short listing.
func (d *archiveDir) complete(ctx context.Context, o *archiveOpen) error {
	select {
	case <-o.a.Done():
	default:
		select {
		case <-o.a.Done():
		case <-ctx.Done():
			return fmt.Errorf("archive %s: waiting for the indexing pass: %w", d.name, ctx.Err())
		}
	}
	o.once.Do(func() {
		var stopped error
		o.err, stopped = d.completed(o)
		d.o.Indexing.ended(d, o.a, cmp.Or(o.err, stopped))
		if o.err == nil {
			return
		}
		if ctx.Err() == nil {
			d.o.Logger.Warn("archive: the listing failed; the next access lists it again", "archive", d.name, "err", o.err)
		}
		d.mu.Lock()
		if d.cur == o {
			d.cur, d.lastErr, d.failedAt = nil, o.err, time.Now()
		}
		d.mu.Unlock()
		o.r.Close()
	})
	return o.err
}

// completed checks a complete listing, logs it and saves it; stopped is
// the damage a tar.gz's pass stopped at, when it did not reach the end.
func (d *archiveDir) completed(o *archiveOpen) (err, stopped error) {
	if o.loaded {
		return nil, nil
	}
	a := o.a
	lerr := a.Err()
	if lerr != nil && !isArchiveError(lerr) {
		return fmt.Errorf("archive %s: listing stopped: %w", d.name, lerr), nil
	}
	if d.kind == archive.TarGz {
		done, _ := a.Progress()
		d.o.Logger.Info("archive: indexed", "archive", d.name, "members", a.Len(), "bytes", done, "took", time.Since(o.start).Round(time.Millisecond))
	}
	if lerr != nil {
		d.o.Logger.Warn("archive: damaged or unsafe parts left out of the listing", "archive", d.name, "members", a.Len(), "err", lerr)
		if done, total := a.Progress(); done < total {
			stopped = lerr
		}
		return nil, stopped
	}
	if store, ok := d.f.(IndexStore); ok {
		if b, err := a.MarshalBinary(); err != nil {
			d.o.Logger.Warn("archive: cannot save the index", "archive", d.name, "err", err)
		} else if err := store.SaveIndex(d.kind.String(), versioned(o.index, b)); err != nil {
			d.o.Logger.Warn("archive: cannot save the index", "archive", d.name, "err", err)
		}
	}
	return nil, nil
}

// indexVersion names the version of the archive an index describes: the
// File's Version and, once it is open, the validators of its local copy
// (a listing's Version may lack them, an index page's for one).
func (d *archiveDir) indexVersion(size int64) string {
	st := d.f.Stats()
	return d.f.Version() + "\x00" + st.ETag + "\x00" + st.LastModified + "\x00" + strconv.FormatInt(size, 10)
}

// isArchiveError reports whether every error in err says something about
// the archive itself, rather than about reading it.
func isArchiveError(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !isArchiveError(e) {
				return false
			}
		}
		return true
	}
	for _, e := range []error{archive.ErrFormat, archive.ErrChecksum, archive.ErrOverlap,
		archive.ErrLimit, archive.ErrUnsafeName, archive.ErrUnsupported} {
		if errors.Is(err, e) {
			return true
		}
	}
	// "and N more problems" joins only problems, which are about the archive.
	return strings.HasPrefix(err.Error(), "and ") && strings.HasSuffix(err.Error(), " more problems")
}

// versioned prefixes an index with the File version it describes, so that
// an index kept for an older version of the object is never used.
func versioned(version string, b []byte) []byte {
	out := binary.AppendUvarint(nil, uint64(len(version)))
	out = append(out, version...)
	return append(out, b...)
}

func (d *archiveDir) loadIndex(store IndexStore, version string, ra io.ReaderAt, size int64) (*archive.Archive, error) {
	b, err := store.LoadIndex(d.kind.String())
	if err != nil {
		return nil, err
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, errors.New("no version header")
	}
	if string(b[k:k+int(n)]) != version {
		return nil, fmt.Errorf("%w: the index is of another version of the archive", iofs.ErrNotExist)
	}
	a, err := archive.LoadIndex(ra, size, b[k+int(n):], d.o.Limits)
	if err != nil {
		return nil, err
	}
	if a.Kind() != d.kind {
		return nil, fmt.Errorf("the index is of a %v archive", a.Kind())
	}
	return a, nil
}

// entries makes the nodes of the archive directory dir ("" is the root).
// A symlink is shown with its target as stored, unless the target leads
// out of the archive (absolute, or climbing above its root): the kernel
// would resolve it against the host, so it is left out and logged.
func (d *archiveDir) entries(o *archiveOpen, dir string) ([]Entry, error) {
	es, err := o.a.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(es))
	hidden, escaped := 0, 0
	for _, e := range es {
		if n, ok := o.earlyNode(e); ok {
			out = append(out, n)
			continue
		}
		node, why, err := d.node(o, e)
		switch {
		case err != nil:
			return nil, err
		case why == hiddenEscaped:
			escaped++
		case why == hiddenSpecial:
			hidden++
		case node.Name != "":
			out = append(out, node)
		}
	}
	if escaped > 0 && !d.escaped.Swap(true) {
		d.o.Logger.Warn("archive: symlinks that lead out of the archive are not shown (first seen in this directory)",
			"archive", d.name, "dir", "/"+dir, "hidden", escaped)
	}
	if hidden > 0 && !d.hidden.Swap(true) {
		d.o.Logger.Warn("archive: special files are not shown (first seen in this directory)",
			"archive", d.name, "dir", "/"+dir, "hidden", hidden)
	}
	return out, nil
}

// Why node shows no node for an entry.
const (
	shown = iota
	hiddenEscaped
	hiddenSpecial
	hiddenDamaged
)

// node makes the node of entry e, or none (an Entry with no Name) with
// the reason; an error is a symlink that could not be read.
func (d *archiveDir) node(o *archiveOpen, e archive.Entry) (Entry, int, error) {
	base := path.Base(e.Name)
	switch {
	case e.IsDir():
		return Entry{Name: base, Dir: &memberDir{d: d, o: o, name: e.Name, mtime: e.ModTime}}, shown, nil
	case e.Mode.Type() == 0:
		return Entry{Name: base, File: &memberFile{d: d, o: o, e: e}}, shown, nil
	case e.Mode&iofs.ModeSymlink != 0:
		target, err := d.linkTarget(o.a, e)
		if err != nil {
			if !isArchiveError(err) {
				return Entry{}, 0, fmt.Errorf("archive %s: symlink %s: %w", d.name, e.Name, err)
			}
			d.o.Logger.Warn("archive: a damaged symlink is not shown", "archive", d.name, "member", e.Name, "err", err)
			return Entry{}, hiddenDamaged, nil
		}
		if e.LinkEscapes || archive.LinkEscapes(e.Name, target) || d.linkLeaves(o, e.Name, target) {
			return Entry{}, hiddenEscaped, nil
		}
		return Entry{Name: base, Link: memberLink{target: target, mtime: e.ModTime}}, shown, nil
	}
	return Entry{}, hiddenSpecial, nil
}

// linkTarget returns a symlink member's target: a tar's is in its entry;
// a zip's is the member's data, read once (a few bytes, CRC-checked) and
// kept.
func (d *archiveDir) linkTarget(a *archive.Archive, e archive.Entry) (string, error) {
	if d.kind != archive.Zip {
		return e.Linkname, nil
	}
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	if t, ok := d.links[e.Name]; ok {
		return t, nil
	}
	t, err := a.Readlink(e.Name)
	if err != nil {
		return "", err
	}
	if d.links == nil {
		d.links = map[string]string{}
	}
	d.links[e.Name] = t
	return t, nil
}

// maxLinkHops bounds the symlinks linkLeaves follows for one link, as the
// kernel's 40 bound one path lookup (ELOOP); maxLinkTarget is the longest
// target the kernel follows (PATH_MAX), and maxLinkSteps bounds the
// components one resolution looks at, so that no crafted archive makes a
// listing slow.
const (
	maxLinkHops   = 40
	maxLinkTarget = 4096
	maxLinkSteps  = 8192
)

// linkLeaves reports whether the symlink name -> target leaves the
// archive's root as the kernel resolves it in the mount: component by
// component, with a component that is itself one of the archive's
// symlinks replaced by its target, relative to that link's directory. A
// text-only check is not enough: with sub/u -> "..", every "u" is the
// root again, so "u/sub/u/../../.." reads as inside and climbs out. A
// component the archive does not hold, or that is not a directory, ends
// the kernel's walk there (ENOENT, ENOTDIR), so the link cannot climb
// past it. A target longer than the kernel follows, a chain longer than
// maxLinkHops, a walk longer than maxLinkSteps, or a link that cannot be
// read counts as leaving. It needs the whole listing: a tar.gz's pass must
// have ended (lookupIn waits for it before making a symlink's node).
func (d *archiveDir) linkLeaves(o *archiveOpen, name, target string) bool {
	if len(target) > maxLinkTarget {
		return true
	}
	var at []string // where the resolution stands: existing directories below the root
	if dir := path.Dir(name); dir != "." {
		at = strings.Split(dir, "/")
	}
	rest := strings.Split(target, "/")
	for hops, steps := 0, 0; len(rest) > 0; steps++ {
		if steps > maxLinkSteps {
			return true
		}
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(at) == 0 {
				return true
			}
			at = at[:len(at)-1]
			continue
		}
		e, ok := o.a.Lookup(path.Join(path.Join(at...), c))
		switch {
		case !ok || e.Mode.Type() == 0:
			// Missing, or a file: the kernel's walk ends here, inside (a
			// file as the last component is where the link points).
			return false
		case e.IsDir():
			at = append(at, c)
			continue
		case e.Mode&iofs.ModeSymlink == 0:
			return false // a device or FIFO: not shown, so not found
		}
		if hops++; hops > maxLinkHops || e.LinkEscapes {
			return true
		}
		t, err := d.linkTarget(o.a, e)
		if err != nil || t == "" || len(t) > maxLinkTarget || strings.HasPrefix(t, "/") || strings.IndexByte(t, 0) >= 0 {
			return true
		}
		rest = append(strings.Split(t, "/"), rest...)
	}
	return false
}

// memberLink is a symlink inside an archive.
type memberLink struct {
	target string
	mtime  time.Time
}

var _ Symlink = memberLink{}

func (l memberLink) Target() string   { return l.target }
func (l memberLink) Mtime() time.Time { return l.mtime }

// memberDir is a directory inside an archive. Its listing waits for a
// tar.gz's pass to end; a lookup in it does not (lookupEarly).
type memberDir struct {
	d     *archiveDir
	o     *archiveOpen
	name  string
	mtime time.Time
}

var (
	_ Dir           = (*memberDir)(nil)
	_ earlyLookuper = (*memberDir)(nil)
)

func (m *memberDir) List(ctx context.Context) ([]Entry, error) {
	if err := m.d.complete(ctx, m.o); err != nil {
		return nil, err
	}
	return m.d.entries(m.o, m.name)
}

func (m *memberDir) Mtime() time.Time { return m.mtime }

func (m *memberDir) lookupEarly(ctx, _ context.Context, name string) (Entry, error) {
	if m.d.kind != archive.TarGz {
		return Entry{}, errListFirst
	}
	return m.d.lookupIn(ctx, m.o, m.name+"/"+name)
}

// memberFile is a regular member of an archive.
type memberFile struct {
	d *archiveDir
	o *archiveOpen
	e archive.Entry
}

var _ File = (*memberFile)(nil)

func (m *memberFile) Attr() Attr {
	return Attr{Size: m.e.Size, Mtime: m.e.ModTime, Exact: true}
}

func (m *memberFile) Stat(context.Context) (Attr, error) { return m.Attr(), nil }

func (m *memberFile) Stats() Stats {
	st := m.d.f.Stats()
	return Stats{URL: st.URL, ETag: st.ETag, LastModified: st.LastModified, Size: m.e.Size,
		More: []Xattr{{Name: "archive_member", Value: m.e.Name}}}
}

func (m *memberFile) Version() string { return m.d.f.Version() + m.versionSuffix() }

// versionSuffix names the member within a version of its archive.
func (m *memberFile) versionSuffix() string {
	return "\x00" + m.e.Name + "\x00" + strconv.FormatInt(m.e.Size, 10)
}

// Open reads the member's header when it must (a zip's local header, once
// per member), then serves a stored member as a range of its own Reader of
// the archive and any other through an inflating archive.Reader.
func (m *memberFile) Open(ctx context.Context) (Reader, error) {
	ar, err := m.o.a.Open(m.e.Name)
	if err != nil {
		return nil, err
	}
	e := ar.Entry()
	off, ok := e.Span()
	if !ok || m.d.kind == archive.TarGz {
		// A tar.gz member's Span is an offset in the decompressed
		// stream, not in the archive (archive.Entry.Span reports ok for
		// it, against its doc): it is always inflated.
		return &inflateReader{ar: ar, version: m.o.version + m.versionSuffix()}, nil
	}
	ar.Close()
	r, err := m.d.f.Open(ctx)
	if err != nil {
		return nil, err
	}
	crc, hasCRC := e.CRC32()
	return &spanReader{r: r, base: off, size: e.Size, want: crc, hasCRC: hasCRC, version: r.Version() + m.versionSuffix()}, nil
}

// spanReader serves a stored member, the bytes [base, base+size) of the
// archive, through a Reader of the archive of its own (its sequential
// detector drives read-ahead as for a plain file). A handle that reads the
// member from start to end in order has its CRC-32 checked, when the
// archive records one: the read that reaches the end fails on a mismatch,
// and so does every later read.
type spanReader struct {
	r          Reader
	base, size int64
	want       uint32
	hasCRC     bool
	version    string

	mu     sync.Mutex // Protects: crcPos, crc, bad.
	crcPos int64      // the CRC covers [0, crcPos)
	crc    uint32
	bad    error
}

func (s *spanReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset", iofs.ErrInvalid)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), s.size-off)
	got, err := s.r.ReadAt(ctx, p[:n], s.base+off)
	if int64(got) < n {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%w: member data cut short at %d of %d bytes", archive.ErrFormat, off+int64(got), s.size)
		}
		return got, err
	}
	if s.hasCRC {
		if err := s.track(p[:n], off); err != nil {
			return 0, err
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

func (s *spanReader) track(p []byte, off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bad != nil {
		return s.bad
	}
	end := off + int64(len(p))
	if off > s.crcPos || end <= s.crcPos {
		return nil
	}
	s.crc = crc32.Update(s.crc, crc32.IEEETable, p[s.crcPos-off:])
	s.crcPos = end
	if s.crcPos == s.size && s.crc != s.want {
		s.bad = fmt.Errorf("%w: CRC-32 %08x, the archive says %08x", archive.ErrChecksum, s.crc, s.want)
		return s.bad
	}
	return nil
}

func (s *spanReader) PassthroughPath() string { return "" }
func (s *spanReader) Version() string         { return s.version }
func (s *spanReader) Close() error            { return s.r.Close() }

// inflateReader serves a compressed member (deflated zip, tar.gz) through
// an archive.Reader, which reads the archive through the archive
// directory's Reader; each of those reads is bounded by OpTimeout.
type inflateReader struct {
	ar      *archive.Reader
	version string
}

func (z *inflateReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		// Nothing is at hand without inflating, which may wait.
		return 0, err
	}
	return z.ar.ReadAt(p, off)
}

func (z *inflateReader) PassthroughPath() string { return "" }
func (z *inflateReader) Version() string         { return z.version }
func (z *inflateReader) Close() error            { return z.ar.Close() }

// ReadAheadLimiter is an optional interface of a Reader: LimitReadAhead
// tells it that its handle will read little past byte end, so that its
// read-ahead stops there (cache.Reader.LimitReadAhead).
type ReadAheadLimiter interface {
	LimitReadAhead(end int64)
}

// ctxReaderAt is a Reader as an io.ReaderAt for the archive package: each
// read gets its own deadline, timeout after it starts, within ctx.
//
// Until listed is set, a small read the cache cannot answer at once goes
// to direct, when there is one.
type ctxReaderAt struct {
	r       Reader
	ctx     context.Context
	timeout time.Duration
	direct  RangeReader
	listed  atomic.Bool
	// open opens another Reader of the archive for a pass (OpenPass); nil
	// in a pass's own ctxReaderAt.
	open func(context.Context) (Reader, error)
}

var _ archive.PassOpener = (*ctxReaderAt)(nil)

// OpenPass gives a tar.gz member's inflating pass a Reader of its own,
// with read-ahead limited to end: its sequential reads earn read-ahead
// that would otherwise run far past the member, and they do not disturb
// the streams of the directory's Reader or of other members' passes.
func (c *ctxReaderAt) OpenPass(off, end int64) (archive.ReadAtCloser, error) {
	if c.open == nil {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	r, err := c.open(ctx)
	cancel()
	if err != nil {
		return nil, err
	}
	if l, ok := r.(ReadAheadLimiter); ok {
		l.LimitReadAhead(end)
	}
	p := &ctxReaderAt{r: r, ctx: c.ctx, timeout: c.timeout}
	p.listed.Store(true)
	return p, nil
}

// Close closes the Reader of a pass (OpenPass); the directory's own is
// closed with the directory.
func (c *ctxReaderAt) Close() error {
	if c.open != nil {
		return nil
	}
	return c.r.Close()
}

func (c *ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	if c.direct != nil && !c.listed.Load() && len(p) <= maxDirectRead {
		now, cancelNow := context.WithDeadline(ctx, time.Now())
		n, err := c.r.ReadAt(now, p, off)
		cancelNow()
		if n == len(p) || err == io.EOF {
			return n, err
		}
		return c.direct.ReadRange(ctx, p, off)
	}
	n, err := c.r.ReadAt(ctx, p, off)
	if err != nil && err != io.EOF && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("reading the archive at %d timed out after %v: %w", off, c.timeout, err)
	}
	return n, err
}
