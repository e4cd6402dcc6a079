package fs

import (
	"bytes"
	"context"
	"errors"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// memFile is a File over bytes in memory, counting Stat and Open calls.
type memFile struct {
	data    []byte
	version string
	hint    int64 // >= 0: Attr shows this size as a hint until Stat
	openErr error
	stats   atomic.Int64
	opens   atomic.Int64
}

func (f *memFile) Attr() Attr {
	if f.hint >= 0 {
		return Attr{Size: f.hint}
	}
	return Attr{Size: int64(len(f.data)), Exact: true}
}

func (f *memFile) Stat(context.Context) (Attr, error) {
	f.stats.Add(1)
	return Attr{Size: int64(len(f.data)), Exact: true}, nil
}

func (f *memFile) Open(context.Context) (Reader, error) {
	f.opens.Add(1)
	if f.openErr != nil {
		return nil, f.openErr
	}
	return &memReader{r: bytes.NewReader(f.data)}, nil
}

func (f *memFile) Stats() Stats    { return Stats{URL: "mem:" + f.version, Size: int64(len(f.data))} }
func (f *memFile) Version() string { return f.version }

type memReader struct{ r *bytes.Reader }

func (r *memReader) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return r.r.ReadAt(p, off)
}
func (r *memReader) PassthroughPath() string { return "" }
func (r *memReader) Version() string         { return "" }
func (r *memReader) Close() error            { return nil }

// memDir is a Dir whose listing a test can replace; it counts List calls.
type memDir struct {
	mu      sync.Mutex
	entries []Entry
	lists   atomic.Int64
}

func (d *memDir) List(context.Context) ([]Entry, error) {
	d.lists.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.entries), nil
}

func (d *memDir) Mtime() time.Time { return time.Time{} }

func (d *memDir) set(es ...Entry) {
	d.mu.Lock()
	d.entries = es
	d.mu.Unlock()
}

func file(data, version string) *memFile {
	return &memFile{data: []byte(data), version: version, hint: -1}
}

// mountTree mounts root in a fresh directory, undone by t.Cleanup.
func mountTree(t *testing.T, root Dir, o Options) (string, *Server) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping a real mount: /dev/fuse is not available here (%v)", err)
	}
	dir := t.TempDir()
	srv, err := Mount(dir, root, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountWait(t, srv)
	})
	return dir, srv
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A directory is listed on its first access and not before; a subdirectory
// only when it is itself accessed.
func TestTreeListsLazily(t *testing.T) {
	sub, deep := &memDir{}, &memDir{}
	deep.set(Entry{Name: "z", File: file("zz", "z1")})
	sub.set(Entry{Name: "deep", Dir: deep}, Entry{Name: "y", File: file("y", "y1")})
	root := &memDir{}
	root.set(Entry{Name: "a", File: file("aaa", "a1")}, Entry{Name: "sub", Dir: sub})
	dir, _ := mountTree(t, root, Options{})
	if n := root.lists.Load() + sub.lists.Load(); n != 0 {
		t.Fatalf("%d listings before any access", n)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"a", "sub"}) {
		t.Fatalf("root lists %q", got)
	}
	if root.lists.Load() != 1 || sub.lists.Load() != 0 || deep.lists.Load() != 0 {
		t.Fatalf("after listing the root: root %d, sub %d, deep %d listings; want 1, 0, 0",
			root.lists.Load(), sub.lists.Load(), deep.lists.Load())
	}
	if got := readFile(t, filepath.Join(dir, "sub", "deep", "z")); got != "zz" {
		t.Fatalf("sub/deep/z = %q", got)
	}
	names(t, filepath.Join(dir, "sub"))
	if root.lists.Load() != 1 || sub.lists.Load() != 1 || deep.lists.Load() != 1 {
		t.Fatalf("listings: root %d, sub %d, deep %d; want 1 each", root.lists.Load(), sub.lists.Load(), deep.lists.Load())
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "nope")); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatalf("stat of a missing name: %v", err)
	}
}

// A size that is only a hint is shown by readdir and lookup without asking
// the file; a stat asks it, and then shows the exact size.
func TestTreeHintSizeAskedAtStat(t *testing.T) {
	f := &memFile{data: []byte("exactly 20 bytes....")[:20], version: "v", hint: 1000}
	root := &memDir{}
	root.set(Entry{Name: "f", File: f})
	dir, _ := mountTree(t, root, Options{})
	if _, err := os.ReadDir(dir); err != nil {
		t.Fatal(err)
	}
	if n := f.stats.Load(); n != 0 {
		t.Fatalf("readdir asked Stat %d times", n)
	}
	fi, err := os.Stat(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 20 || f.stats.Load() == 0 {
		t.Fatalf("stat shows %d bytes after %d Stat calls; want 20 after at least one", fi.Size(), f.stats.Load())
	}
	if got := readFile(t, filepath.Join(dir, "f")); got != string(f.data) {
		t.Fatalf("read %q", got)
	}
}

// A listing older than DirCacheTime is refreshed in the background: new
// names appear, a file whose version changed gets a new inode that new opens
// read, and a handle opened before keeps reading the version it opened.
func TestTreeRefreshShowsNewVersions(t *testing.T) {
	root := &memDir{}
	root.set(Entry{Name: "a", File: file("old content", "a1")})
	dir, _ := mountTree(t, root, Options{DirCacheTime: 100 * time.Millisecond})
	path := filepath.Join(dir, "a")
	h, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var before syscall.Stat_t
	if err := syscall.Stat(path, &before); err != nil {
		t.Fatal(err)
	}
	root.set(Entry{Name: "a", File: file("new content!", "a2")}, Entry{Name: "b", File: file("b", "b1")})

	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(names(t, dir), []string{"a", "b"}) {
		if time.Now().After(deadline) {
			t.Fatalf("the refreshed listing did not show up within 5 s: %q", names(t, dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var after syscall.Stat_t
	for {
		if err := syscall.Stat(path, &after); err != nil {
			t.Fatal(err)
		}
		if after.Ino != before.Ino || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after.Ino == before.Ino || after.Size != int64(len("new content!")) {
		t.Fatalf("after the change: inode %d (was %d), size %d; want a new inode of 12 bytes", after.Ino, before.Ino, after.Size)
	}
	if got := readFile(t, path); got != "new content!" {
		t.Fatalf("a new open reads %q", got)
	}
	buf := make([]byte, 64)
	n, _ := h.ReadAt(buf, 0)
	if string(buf[:n]) != "old content" {
		t.Fatalf("the handle opened before the change reads %q", buf[:n])
	}
}

// An unchanged file keeps its inode across a refresh.
func TestTreeRefreshKeepsUnchangedFiles(t *testing.T) {
	root := &memDir{}
	a := file("same", "a1")
	root.set(Entry{Name: "a", File: a})
	dir, srv := mountTree(t, root, Options{DirCacheTime: time.Hour})
	var before, after syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "a"), &before); err != nil {
		t.Fatal(err)
	}
	root.set(Entry{Name: "a", File: file("same", "a1")}, Entry{Name: "c", File: file("c", "c1")})
	srv.Forget()
	if got := names(t, dir); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("after Forget the root lists %q, want [a c]", got)
	}
	if err := syscall.Stat(filepath.Join(dir, "a"), &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino {
		t.Fatalf("an unchanged file changed inode: %d, was %d", after.Ino, before.Ino)
	}
}

// Forget (SIGHUP) makes the next access list again at once, however long
// the listing would otherwise be kept; a removed name disappears.
func TestTreeForgetListsAgain(t *testing.T) {
	root := &memDir{}
	root.set(Entry{Name: "a", File: file("a", "a1")}, Entry{Name: "b", File: file("b", "b1")})
	dir, srv := mountTree(t, root, Options{DirCacheTime: time.Hour})
	if _, err := os.Stat(filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	root.set(Entry{Name: "a", File: file("a", "a1")})
	if got := names(t, dir); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("before Forget: %q", got)
	}
	srv.Forget()
	if _, err := os.Stat(filepath.Join(dir, "b")); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatalf("stat of a name gone after Forget: %v", err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after Forget: %q", got)
	}
	if n := root.lists.Load(); n != 2 {
		t.Fatalf("%d listings, want 2", n)
	}
}

// An open's errors become the errno their kind says.
func TestTreeOpenErrors(t *testing.T) {
	root := &memDir{}
	unsupported := file("x", "u")
	unsupported.openErr = errors.Join(errors.ErrUnsupported, errors.New("the server ignores ranges"))
	gone := file("x", "g")
	gone.openErr = iofs.ErrNotExist
	broken := file("x", "b")
	broken.openErr = errors.New("network down")
	root.set(Entry{Name: "broken", File: broken}, Entry{Name: "gone", File: gone}, Entry{Name: "unsupported", File: unsupported})
	dir, _ := mountTree(t, root, Options{})
	for name, want := range map[string]syscall.Errno{"unsupported": syscall.EOPNOTSUPP, "gone": syscall.ENOENT, "broken": syscall.EIO} {
		_, err := os.Open(filepath.Join(dir, name))
		if !errors.Is(err, want) {
			t.Errorf("open %s: %v, want %v", name, err, want)
		}
	}
}

// A directory whose listing fails answers EIO, then lists once it works.
func TestTreeFailedListingRetried(t *testing.T) {
	root := &failingDir{}
	root.fail.Store(true)
	dir, _ := mountTree(t, root, Options{})
	if _, err := os.ReadDir(dir); !errors.Is(err, syscall.EIO) {
		t.Fatalf("readdir of a failing listing: %v, want EIO", err)
	}
	root.fail.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		es, err := os.ReadDir(dir)
		if err == nil && len(es) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listing did not recover within 5 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type failingDir struct{ fail atomic.Bool }

func (d *failingDir) List(context.Context) ([]Entry, error) {
	if d.fail.Load() {
		return nil, errors.New("server down")
	}
	return []Entry{{Name: "f", File: file("f", "f1")}}, nil
}

func (d *failingDir) Mtime() time.Time { return time.Time{} }

type memLink struct{ target string }

func (l memLink) Target() string   { return l.target }
func (l memLink) Mtime() time.Time { return time.Time{} }

// A symlink entry is shown as a symlink with its target as given.
func TestTreeSymlink(t *testing.T) {
	root := &memDir{}
	root.set(Entry{Name: "a", File: file("aaa", "a1")}, Entry{Name: "l", Link: memLink{"a"}}, Entry{Name: "out", Link: memLink{"../../etc/passwd"}})
	dir, _ := mountTree(t, root, Options{})
	if got, err := os.Readlink(filepath.Join(dir, "out")); err != nil || got != "../../etc/passwd" {
		t.Fatalf("readlink out = %q, %v", got, err)
	}
	fi, err := os.Lstat(filepath.Join(dir, "l"))
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("lstat l: %v, %v", fi, err)
	}
	es, err := os.ReadDir(dir)
	if err != nil || len(es) != 3 || es[1].Type() != os.ModeSymlink {
		t.Fatalf("readdir: %v, %v", es, err)
	}
	if got := readFile(t, filepath.Join(dir, "l")); got != "aaa" {
		t.Fatalf("reading through the link inside the mount: %q", got)
	}
}
