package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/cache/cachetest"
	"rangefs/fetch/fetchtest/testsync"
	"rangefs/fs/archive/archivetest"
)

// These tests mount archives made by real tools (zip, python's zipfile,
// GNU tar, bsdtar, gzip, pigz) through a real FUSE mount over cache files,
// and compare what the mount shows with what the tools list and extract.

// memIndexFile is a File that keeps archive indexes in memory.
type memIndexFile struct {
	File
	mu    sync.Mutex
	saved map[string][]byte
}

func (m *memIndexFile) LoadIndex(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.saved[name]; ok {
		return b, nil
	}
	return nil, iofs.ErrNotExist
}

func (m *memIndexFile) SaveIndex(name string, b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saved[name] = bytes.Clone(b)
	return nil
}

type archMount struct {
	dir  string
	srcs map[string]*cachetest.Source
	log  *testsync.Buffer
	srv  *Server
	done func()
}

// mountArchives mounts each archive (name -> content) as a cache file under
// cacheRoot, with --archives. stores, when not nil, gives each file an
// in-memory IndexStore (kept in the map across mounts).
func mountArchives(t *testing.T, archives map[string][]byte, cacheRoot string, stores map[string]*memIndexFile) *archMount {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping a real mount: /dev/fuse is not available here (%v)", err)
	}
	m := &archMount{dir: t.TempDir(), srcs: map[string]*cachetest.Source{}, log: &testsync.Buffer{}}
	var files []*cache.File
	var entries []Entry
	for name, b := range archives {
		src := cachetest.BytesSource(b)
		m.srcs[name] = src
		f, err := cache.Open(filepath.Join(cacheRoot, name), cache.Meta{Size: int64(len(b)), ChunkSize: chunk, ETag: `"v1"`, URL: "http://test/" + name},
			src, cache.Options{ReadAheadMax: 4 * chunk})
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		var file File = CacheFile(f, time.Time{})
		if stores != nil {
			s := stores[name]
			if s == nil {
				s = &memIndexFile{saved: map[string][]byte{}}
				stores[name] = s
			}
			s.File = file
			file = s
		}
		entries = append(entries, Entry{Name: name, File: file})
	}
	log := slog.New(slog.NewTextHandler(m.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	root := WithArchives(Static(entries, time.Time{}), ArchiveOptions{Logger: log, OpTimeout: 10 * time.Second})
	srv, err := Mount(m.dir, root, Options{Logger: log, OpTimeout: 10 * time.Second})
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		t.Fatal(err)
	}
	m.srv = srv
	var once sync.Once
	m.done = func() {
		once.Do(func() {
			unmountWait(t, srv)
			for _, f := range files {
				f.Close()
			}
		})
	}
	t.Cleanup(m.done)
	return m
}

// makeArchiveTree writes n files of varied size and content under dir
// (text that compresses, random bytes, empty files, a few large ones, a
// name longer than 100 bytes) and an empty directory.
func makeArchiveTree(t *testing.T, dir string, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range n {
		d := fmt.Sprintf("d%d/sub%d", i%7, i%3)
		if i%13 == 0 {
			d = "top"
		}
		name := fmt.Sprintf("file %03d-é.%s", i, []string{"txt", "bin", "dat"}[i%3])
		if i == 5 {
			name = strings.Repeat("long-name-", 14) + ".txt" // GNU long name / pax path
		}
		data := archivetest.MemberData(rng, i, 30<<10)
		if i >= 1 && i <= 4 {
			// Big members: windows, restarts and read-ahead matter.
			data = make([]byte, 0, 900<<10)
			for len(data) < 900<<10 {
				if i%2 == 0 {
					data = append(data, byte(rng.Uint32()))
				} else {
					data = fmt.Appendf(data, "%08d %x\n", len(data), rng.Uint32()%4096)
				}
			}
		}
		p := filepath.Join(dir, d, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "empty dir"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// compareExtracted checks that every regular file the tool extracted to
// want reads the same through the mount under got; it returns the count.
func compareExtracted(t *testing.T, got, want string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(want, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(want, p)
		if g, w := fileSum(t, filepath.Join(got, rel)), fileSum(t, p); g != w {
			t.Errorf("%s: sha256 %s through the mount, %s extracted by the tool", rel, g, w)
		}
		n++
		return nil
	})
	return n
}

// zip64Script writes out.zip with python's zipfile, zip64 records forced
// on every member, alternately stored and deflated.
const zip64Script = `
import os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w") as z:
    i = 0
    for root, dirs, files in os.walk(src):
        for f in sorted(files):
            p = os.path.join(root, f)
            name = os.path.relpath(p, src)
            zi = zipfile.ZipInfo(name, date_time=(2024, 5, 6, 7, 8, 10))
            zi.compress_type = zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED
            with open(p, "rb") as fh, z.open(zi, "w", force_zip64=True) as w:
                w.write(fh.read())
            i += 1
`

// TestArchivesMadeByTools: listings equal the tools', every member's
// sha256 equals the tool's extraction, and big stored and deflated
// members read right with random preads.
func TestArchivesMadeByTools(t *testing.T) {
	archivetest.NeedTools(t, "zip", "unzip", "python3", "tar", "bsdtar", "gzip", "pigz")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	makeArchiveTree(t, src, 320)
	archivetest.Shell(t, src, "zip -q -r -n .bin ../info.zip .")
	archivetest.Shell(t, src, "python3 -c '"+strings.ReplaceAll(zip64Script, "'", `'"'"'`)+"' . ../py64.zip")
	archivetest.Shell(t, src, "tar --format=gnu -cf ../gnu.tar .")
	archivetest.Shell(t, src, "bsdtar -cf ../bsd.tar .")
	archivetest.Shell(t, src, "tar --format=posix -cf - . | gzip -6 > ../gz.tar.gz")
	archivetest.Shell(t, src, "tar -cf - . | pigz -p 2 > ../pigz.tgz")
	names := []string{"info.zip", "py64.zip", "gnu.tar", "bsd.tar", "gz.tar.gz", "pigz.tgz"}
	archives := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(work, n))
		if err != nil {
			t.Fatal(err)
		}
		archives[n] = b
	}
	m := mountArchives(t, archives, t.TempDir(), nil)

	top := archivetest.WalkNames(t, m.dir)
	var dirs []string
	for _, n := range top {
		if !strings.Contains(n, "/") {
			dirs = append(dirs, n)
		}
	}
	want := slices.Clone(names)
	sort.Strings(want)
	archivetest.EqualNames(t, "mount root", dirs, want)

	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			a := filepath.Join(work, n)
			out := filepath.Join(work, "x-"+n)
			if err := os.Mkdir(out, 0o755); err != nil {
				t.Fatal(err)
			}
			var listing string
			if strings.HasSuffix(n, ".zip") {
				listing = archivetest.Shell(t, work, "unzip -Z1 "+a)
				archivetest.Shell(t, out, "unzip -q "+a)
			} else {
				listing = archivetest.Shell(t, work, "tar tf "+a)
				archivetest.Shell(t, out, "tar xf "+a)
			}
			archivetest.EqualNames(t, "listing of "+n, archivetest.WalkNames(t, filepath.Join(m.dir, n)), archivetest.ToolNames(listing))
			count := compareExtracted(t, filepath.Join(m.dir, n), out)
			if count < 300 {
				t.Errorf("%d members compared, want at least 300", count)
			}
			// Big members: d1/sub1 file 001 (text, deflated in a zip), 002 (.dat),
			// 004 (.bin: stored by zip -n .bin).
			for _, big := range []string{"d1/sub1/file 001-é.bin", "d2/sub2/file 002-é.dat", "d3/sub0/file 003-é.txt", "d4/sub1/file 004-é.bin"} {
				wantB, err := os.ReadFile(filepath.Join(out, big))
				if err != nil {
					t.Fatal(err)
				}
				randomPreads(t, filepath.Join(m.dir, n, big), wantB, uint64(len(n)))
			}
			t.Logf("%s: %d members match; %d of %d archive bytes fetched", n, count, m.srcs[n].Bytes(), len(archives[n]))
		})
	}
}

// randomPreads reads name with 200 preads of random offset and length
// (forward, backward, past the end) on one handle and on fresh handles.
func randomPreads(t *testing.T, name string, want []byte, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := int64(len(want))
	for i := range 200 {
		off := rng.Int64N(size + 10)
		n := 1 + rng.IntN(200<<10)
		buf := make([]byte, n)
		h := f
		if i%20 == 0 {
			h, err = os.Open(name)
			if err != nil {
				t.Fatal(err)
			}
		}
		got, err := h.ReadAt(buf, off)
		if h != f {
			h.Close()
		}
		end := min(off+int64(n), size)
		if off >= size {
			end = off
		}
		if err != nil && err != io.EOF {
			t.Fatalf("%s: pread(%d, %d): %v", name, off, n, err)
		}
		if int64(got) != end-off || !bytes.Equal(buf[:got], want[off:end]) {
			t.Fatalf("%s: pread(%d, %d) gave %d bytes, not the member's [%d, %d)", name, off, n, got, off, end)
		}
	}
}

// TestArchiveIndexRemountListsWithoutFetching: a tar's and a tar.gz's
// listing is kept in the File's IndexStore, and the next mount lists and
// reads with it, fetching nothing to list.
func TestArchiveIndexRemountListsWithoutFetching(t *testing.T) {
	archivetest.NeedTools(t, "tar", "gzip", "zip")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	makeArchiveTree(t, src, 60)
	archivetest.Shell(t, src, "tar -cf ../a.tar . && tar -czf ../b.tar.gz . && zip -q -r ../c.zip .")
	archives := map[string][]byte{}
	for _, n := range []string{"a.tar", "b.tar.gz", "c.zip"} {
		b, err := os.ReadFile(filepath.Join(work, n))
		if err != nil {
			t.Fatal(err)
		}
		archives[n] = b
	}
	stores := map[string]*memIndexFile{}
	m := mountArchives(t, archives, t.TempDir(), stores) // a fresh cache each time
	first := map[string][]string{}
	for n := range archives {
		first[n] = archivetest.WalkNames(t, filepath.Join(m.dir, n))
	}
	m.done()
	for n, s := range stores {
		if len(s.saved) != 1 {
			t.Fatalf("%s: %d indexes saved, want 1", n, len(s.saved))
		}
	}
	m = mountArchives(t, archives, t.TempDir(), stores)
	for n := range archives {
		archivetest.EqualNames(t, "remounted "+n, archivetest.WalkNames(t, filepath.Join(m.dir, n)), first[n])
		if got := m.srcs[n].Bytes(); got != 0 {
			t.Errorf("%s: listing with a saved index fetched %d bytes, want 0", n, got)
		}
	}
	// The index serves reads too.
	wantB, err := os.ReadFile(filepath.Join(src, "d2/sub2/file 002-é.dat"))
	if err != nil {
		t.Fatal(err)
	}
	for n := range archives {
		got, err := os.ReadFile(filepath.Join(m.dir, n, "d2/sub2/file 002-é.dat"))
		if err != nil || !bytes.Equal(got, wantB) {
			t.Errorf("%s: reading a member after loading the index: %d bytes, %v", n, len(got), err)
		}
	}
	m.done()

	// An index of another version of the object is not used.
	for _, s := range stores {
		for k, b := range s.saved {
			s.saved[k] = bytes.Replace(b, []byte(`"v1"`), []byte(`"v0"`), 1)
		}
	}
	m = mountArchives(t, archives, t.TempDir(), stores)
	archivetest.EqualNames(t, "a.tar with a stale index", archivetest.WalkNames(t, filepath.Join(m.dir, "a.tar")), first["a.tar"])
	if got := m.srcs["a.tar"].Bytes(); got == 0 {
		t.Errorf("a.tar listed with 0 bytes fetched: the stale index was used")
	}
}

func TestArchiveKind(t *testing.T) {
	for name, want := range map[string]string{
		"a.zip": "zip", "A.ZIP": "zip", "a.tar": "tar", "a.tar.gz": "tar.gz", "a.TGZ": "tar.gz",
		"a.gz": "", "zip": "", "a.tar.bz2": "", "a.zip.part": "",
	} {
		got := ""
		if k := ArchiveKind(name); k != 0 {
			got = k.String()
		}
		if got != want {
			t.Errorf("ArchiveKind(%q) = %q, want %q", name, got, want)
		}
	}
}

// readErrno reads a whole file and returns the errno it failed with.
func readErrno(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return b, errno
	}
	return b, err
}

// directFile is a File that also reads ranges straight from the remote's
// bytes b, counting them.
type directFile struct {
	File
	b     []byte
	bytes atomic.Int64
}

func (d *directFile) ReadRange(ctx context.Context, p []byte, off int64) (int, error) {
	n := min(len(p), len(d.b)-int(off))
	if n <= 0 {
		return 0, io.EOF
	}
	d.bytes.Add(int64(n))
	copy(p, d.b[off:int(off)+n])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestTarListingReadsHeadersDirectly: with a RangeReader, listing a tar
// reads only its headers, none of it through the cache (whose blocks and
// read-ahead would fetch far more); member reads still use the cache.
func TestTarListingReadsHeadersDirectly(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping a real mount: /dev/fuse is not available here (%v)", err)
	}
	archivetest.NeedTools(t, "tar")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	for i := range 200 {
		p := filepath.Join(src, fmt.Sprintf("d%d/m%03d", i%4, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 100<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	archivetest.Shell(t, src, "tar -cf ../a.tar .")
	b, err := os.ReadFile(filepath.Join(work, "a.tar"))
	if err != nil {
		t.Fatal(err)
	}
	s := cachetest.BytesSource(b)
	f, err := cache.Open(t.TempDir(), cache.Meta{Size: int64(len(b)), ChunkSize: chunk, ETag: `"v1"`, URL: "http://test/a.tar"}, s, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	df := &directFile{File: CacheFile(f, time.Time{}), b: b}
	dir := t.TempDir()
	srv, err := Mount(dir, WithArchives(Static([]Entry{{Name: "a.tar", File: df}}, time.Time{}), ArchiveOptions{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Unmount()
		srv.Wait()
	}()
	names := archivetest.WalkNames(t, filepath.Join(dir, "a.tar"))
	if len(names) != 204 {
		t.Fatalf("%d names listed, want 204", len(names))
	}
	if got := s.Bytes(); got != 0 {
		t.Errorf("listing fetched %d bytes through the cache, want 0", got)
	}
	if got := df.bytes.Load(); got > 210*1024+8192 { // 205 headers (members, directories, ".") and the end
		t.Errorf("listing read %d bytes directly, want about 1 KiB per member", got)
	}
	got, err := os.ReadFile(filepath.Join(dir, "a.tar", "d1/m101"))
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{101}, 100<<10)) {
		t.Errorf("member read: %d bytes, %v", len(got), err)
	}
	if s.Bytes() == 0 {
		t.Error("the member was not read through the cache")
	}
	t.Logf("listing: %d bytes read directly for a %d-byte tar", df.bytes.Load(), len(b))
}

func TestArchiveEntry(t *testing.T) {
	f := &memIndexFile{}
	if e := ArchiveEntry(Entry{Name: "a.tgz", File: f}, ArchiveOptions{}); e.File != nil || e.Dir == nil {
		t.Errorf("a.tgz: %+v, want a directory", e)
	}
	if e := ArchiveEntry(Entry{Name: "a.txt", File: f}, ArchiveOptions{}); e.File != f || e.Dir != nil {
		t.Errorf("a.txt: %+v, want the file as it is", e)
	}
	d := Static(nil, time.Time{})
	if e := ArchiveEntry(Entry{Name: "sub", Dir: d}, ArchiveOptions{}); e.Dir == d || e.Dir == nil {
		t.Errorf("sub: %+v, want the directory wrapped", e)
	}
}
