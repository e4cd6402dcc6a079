package fs

import (
	"context"
	"time"

	"rangefs/cache"
)

// The tree a mount shows is made of Dirs and Files that the caller
// implements; fs only asks them for names, attributes, readers and stats,
// and never learns where the bytes come from (a cache of a remote object, a
// byte range of an archive, an inflating stream). Each method must be safe
// for concurrent use.

// Dir is a directory whose entries are listed lazily: List is called on the
// first lookup or readdir, and again to refresh a listing older than
// Options.DirCacheTime (in the background; the old listing answers
// meanwhile) or forgotten by Server.Forget.
type Dir interface {
	// List returns the entries, sorted by Name, each Name once and a valid
	// file name (not "", "." or "..", no '/' or NUL). It may use the
	// network; ctx bounds it. An error matching io/fs.ErrNotExist is ENOENT,
	// anything else a logged EIO.
	List(ctx context.Context) ([]Entry, error)
	// Mtime is the directory's modification time; zero means the mount time.
	Mtime() time.Time
}

// Entry is one name of a Dir: exactly one of File, Dir and Link is set.
type Entry struct {
	Name string
	File File
	Dir  Dir
	Link Symlink
}

// Symlink is a symbolic link (an archive member). fs shows its target as
// it is and never follows it; resolving it is the kernel's, within the
// mount or not, as for any symlink.
type Symlink interface {
	Target() string
	Mtime() time.Time // zero: the mount time
}

// File is a regular file of the tree.
//
// When a refresh lists a name again, the File it had is kept (with its open
// handles and state) if Version is unchanged; otherwise the name gets a new
// inode with the new File, so new opens see the new version while handles
// open on the old one keep it (or fail with ESTALE, as the File decides).
type File interface {
	// Attr answers from memory and never waits.
	Attr() Attr
	// Stat returns exact attributes, learning them (a probe) if it must.
	// fs calls it at stat time only when Attr is not Exact. On error, fs
	// shows Attr's hints and logs the error; the open will report it.
	Stat(ctx context.Context) (Attr, error)
	// Open returns a reader of one version of the file. ctx bounds the
	// open itself (the reader outlives it). Errors: errors.ErrUnsupported
	// (the server cannot serve ranges) is EOPNOTSUPP, io/fs.ErrNotExist is
	// ENOENT, cache.ErrStale ESTALE, anything else a logged EIO.
	Open(ctx context.Context) (Reader, error)
	// Stats describes the file for du, df, xattrs and rangefs status; from
	// memory, never waits.
	Stats() Stats
	// Version identifies the remote version the File stands for (URL,
	// size, mtime, validator): equal strings are the same content.
	Version() string
}

// Attr is what stat shows of a File.
type Attr struct {
	Size  int64
	Mtime time.Time // zero: the mount time
	// Exact says Size is known exactly. A hint (an index page's "12M") is
	// shown with no attribute caching, so the next stat asks Stat.
	Exact bool
}

// Stats is the state of a File's local copy, shown as user.rangefs.*
// extended attributes. Zero fields are shown as they are ("" and 0).
type Stats struct {
	URL, ETag, LastModified string // secret-free
	Size, ChunkSize         int64
	CachedBytes             int64 // on local disk (st_blocks)
	Chunks, Present         int64
	// More are further attributes, each shown as user.rangefs.NAME (for
	// example sha256 and sha256_check).
	More []Xattr
}

// Filling is an optional interface of a Reader: Filling reports whether
// part of its content is not on local disk yet, so reading it may wait for
// the network (see tree.directIO).
type Filling interface {
	Filling() bool
}

// HeldReader is an optional interface of a Reader: ReadHeld is ReadAt, but
// it may leave the bytes in the cache's data file, pinned, as a Held
// instead of copying them into p (see cache.Reader.ReadHeld); a read may
// then splice them to the kernel (see tree.spliceMax).
type HeldReader interface {
	ReadHeld(ctx context.Context, p []byte, off int64) (int, *cache.Held, error)
}

// Xattr is one extra attribute of Stats.
type Xattr struct{ Name, Value string }

// Reader is one open(2) of a File. It is safe for concurrent use (the
// kernel may issue reads of one handle in parallel) and is closed once, on
// the handle's release.
type Reader interface {
	// ReadAt reads like io.ReaderAt, returning the bare io.EOF at the end
	// of the file only. It waits no longer than ctx allows; with an
	// expired ctx it returns what is at hand without waiting.
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	// PassthroughPath names a local file that holds exactly the whole
	// content now and until Close, which the kernel may then read
	// directly (FUSE passthrough); "" when there is none.
	PassthroughPath() string
	// Version identifies the content this reader serves. The kernel may
	// keep an inode's pages from one open to the next only while it stays
	// the same: an open of another version drops them.
	Version() string
	Close() error
}
