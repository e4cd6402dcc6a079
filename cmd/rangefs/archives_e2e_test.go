package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"

	"rangefs/fs/archive/archivetest"
)

// TestMountArchivesEndToEnd runs the real binary with --archives over a zip,
// a tar and a tar.gz made by the real tools and a zip bomb: listings equal
// the tools', members match their extraction, the daemon's peak RSS stays
// under 64 MiB, and a remount lists the tar from its kept index.
func TestMountArchivesEndToEnd(t *testing.T) {
	needFUSE(t)
	archivetest.NeedTools(t, "zip", "unzip", "tar", "gzip", "python3")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	for i := range 300 {
		var data []byte
		switch i % 3 {
		case 0:
			data = bytes.Repeat(fmt.Appendf(nil, "member %d compresses well\n", i), 50+i*7)
		case 1:
			data = make([]byte, 1000+i*37)
			for j := range data {
				data[j] = byte(uint64(j*i+7) * 0x9E3779B97F4A7C15 >> 56)
			}
		}
		p := filepath.Join(src, fmt.Sprintf("d%d", i%9), fmt.Sprintf("f%03d.%s", i, []string{"txt", "bin", "empty"}[i%3]))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh := func(dir, script string) string { return archivetest.Shell(t, dir, script) }
	sh(src, "zip -q -r -n .bin ../a.zip . && tar -cf ../b.tar . && tar -cf - . | gzip > ../c.tar.gz")
	sh(work, `python3 -c 'import zipfile; zipfile.ZipFile("bomb.zip", "w", zipfile.ZIP_DEFLATED).writestr("zeros", b"\0" * (200 << 20))'`)

	srv := fetchtest.NewServer(bytes.NewReader(nil), 0)
	t.Cleanup(srv.Close)
	var urls []string
	names := []string{"a.zip", "b.tar", "c.tar.gz", "bomb.zip"}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(work, n))
		if err != nil {
			t.Fatal(err)
		}
		srv.AddFile("/"+n, bytes.NewReader(b), int64(len(b)))
		urls = append(urls, srv.URLFor("/"+n))
	}
	mnt, cdir := t.TempDir(), t.TempDir()
	args := append([]string{"--archives", "--no-prefetch", "--cache-dir", cdir}, urls...)
	m := startMount(t, "a.zip", append(args, mnt)...)
	for _, n := range names {
		if fi, err := os.Stat(filepath.Join(mnt, n)); err != nil || !fi.IsDir() {
			t.Fatalf("%s with --archives: %v, %v; want a directory", n, fi, err)
		}
	}
	for _, n := range names[:3] {
		var listing string
		out := filepath.Join(work, "x-"+n)
		os.Mkdir(out, 0o755)
		if strings.HasSuffix(n, ".zip") {
			listing = sh(work, "unzip -Z1 "+n)
			sh(out, "unzip -q ../"+n)
		} else {
			listing = sh(work, "tar tf "+n)
			sh(out, "tar xf ../"+n)
		}
		if got, want := archivetest.WalkNames(t, filepath.Join(mnt, n)), archivetest.ToolNames(listing); !slices.Equal(got, want) {
			t.Errorf("%s: the mount lists %d names, the tool %d:\n%q\n%q", n, len(got), len(want), got, want)
		}
		count := 0
		filepath.WalkDir(out, func(p string, d iofs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, _ := filepath.Rel(out, p)
			if g, w := fileSHA256(t, filepath.Join(mnt, n, rel)), fileSHA256(t, p); g != w {
				t.Errorf("%s/%s: sha256 %s through the mount, %s extracted", n, rel, g, w)
			}
			count++
			return nil
		})
		if count != 300 {
			t.Errorf("%s: %d members compared, want 300", n, count)
		}
	}
	// The bomb inflates to its 200 MiB within bounded memory.
	f, err := os.Open(filepath.Join(mnt, "bomb.zip", "zeros"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	want := sha256.Sum256(make([]byte, 200<<20))
	if err != nil || n != 200<<20 || hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(want[:]) {
		t.Errorf("bomb.zip/zeros: %d bytes, %v, or not the zeros", n, err)
	}
	if hwm := peakRSS(t, m.cmd.Process.Pid); hwm > 64<<20 {
		t.Errorf("the daemon's peak RSS is %d MiB, want under 64", hwm>>20)
	} else {
		t.Logf("the daemon's peak RSS: %.1f MiB", float64(hwm)/(1<<20))
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr.String())
	}
	kept, _ := filepath.Glob(filepath.Join(cdir, "*", "archive-index.*"))
	if len(kept) != 4 {
		t.Errorf("%d archive indexes kept in the cache, want 4: %q", len(kept), kept)
	}

	// Remount: the listings come from the kept indexes.
	before := srv.Stats().BytesSent
	m = startMount(t, "b.tar", append(args, mnt)...)
	mounted := srv.Stats().BytesSent
	for _, n := range names[:3] {
		archivetest.WalkNames(t, filepath.Join(mnt, n))
	}
	if got := srv.Stats().BytesSent - mounted; got != 0 {
		t.Errorf("remount: listing the archives fetched %d bytes, want 0", got)
	}
	t.Logf("remount: %d bytes while mounting (probes), 0 to list", mounted-before)
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)

	// In a tree (a manifest), the same: archives below directories are
	// directories, members read right, and a remount lists from the index
	// kept in each tree file's cache directory.
	manifest := filepath.Join(work, "manifest.tsv")
	var lines strings.Builder
	for i, n := range names[:3] {
		fmt.Fprintf(&lines, "sub/%s\t%s\n", n, urls[i])
	}
	if err := os.WriteFile(manifest, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	tcache := t.TempDir()
	targs := []string{"--archives", "--no-prefetch", "--cache-dir", tcache, "--manifest", manifest, mnt}
	for round := range 2 {
		m = startMount(t, "sub", targs...)
		before := srv.Stats().BytesSent
		for _, n := range names[:3] {
			out := filepath.Join(work, "x-"+n)
			got := archivetest.WalkNames(t, filepath.Join(mnt, "sub", n))
			if want := archivetest.WalkNames(t, out); !slices.Equal(got, want) {
				t.Errorf("manifest, round %d: %s lists %d names, the extraction %d", round, n, len(got), len(want))
			}
		}
		listed := srv.Stats().BytesSent - before
		if round == 1 && listed != 0 {
			t.Errorf("manifest remount: listing fetched %d bytes, want 0", listed)
		}
		member := "d4/f004.bin"
		if g, w := fileSHA256(t, filepath.Join(mnt, "sub", "b.tar", member)), fileSHA256(t, filepath.Join(src, member)); g != w {
			t.Errorf("manifest, round %d: b.tar/%s sha256 %s, want %s", round, member, g, w)
		}
		t.Logf("manifest, round %d: listing fetched %d bytes", round, listed)
		m.cmd.Process.Signal(syscall.SIGTERM)
		m.wait(t)
		if kept, _ := filepath.Glob(filepath.Join(tcache, "*", "archive-index.*")); len(kept) != 3 {
			t.Errorf("manifest: %d archive indexes kept in the tree files' caches, want 3", len(kept))
		}
	}

	// Without --archives an archive is a plain file.
	m = startMount(t, "a.zip", "--no-prefetch", "--cache-dir", cdir, urls[0], mnt)
	if fi, err := os.Stat(filepath.Join(mnt, "a.zip")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("a.zip without --archives: %v, %v; want a regular file", fi, err)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)
}

// heldReaderAt holds every read that reaches past limit until release.
type heldReaderAt struct {
	r     io.ReaderAt
	limit int64
	held  atomic.Bool
	open  chan struct{}
	once  sync.Once
}

func (h *heldReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > h.limit {
		h.held.Store(true)
		<-h.open
	}
	return h.r.ReadAt(p, off)
}

func (h *heldReaderAt) release() { h.once.Do(func() { close(h.open) }) }

// archiveLineRE matches the line `rangefs status MOUNTPOINT` shows for a
// tar.gz being indexed.
var archiveLineRE = regexp.MustCompile(`archive a\.tar\.gz: indexing (.+) of (.+) \((\d+)%\), (\d+) members`)

// TestStatusShowsArchiveIndexing: while a tar.gz's indexing pass runs (the
// server holds the archive's second half), `rangefs status MOUNTPOINT`
// shows how far it got; a member it has indexed is read meanwhile; once
// the pass is done the line is gone.
func TestStatusShowsArchiveIndexing(t *testing.T) {
	needFUSE(t)
	tgz, members := archivetest.TarGz(t, 64, 64<<10, 5)
	content := &heldReaderAt{r: bytes.NewReader(tgz), limit: int64(len(tgz)) / 2, open: make(chan struct{})}
	srv := fetchtest.NewServer(bytes.NewReader(nil), 0)
	t.Cleanup(srv.Close)
	t.Cleanup(content.release) // first: the server's handlers are not held at its close
	srv.AddFile("/a.tar.gz", content, int64(len(tgz)))
	mnt := t.TempDir()
	m := startMount(t, "a.tar.gz", "--archives", "--no-prefetch", "--cache-dir", t.TempDir(), srv.URLFor("/a.tar.gz"), mnt)
	arch := filepath.Join(mnt, "a.tar.gz")
	first := make(chan error, 1)
	go func() {
		b, err := os.ReadFile(filepath.Join(arch, archivetest.MemberName(1)))
		if err == nil && !bytes.Equal(b, members[1]) {
			err = fmt.Errorf("%d bytes, not the member's", len(b))
		}
		first <- err
	}()
	for deadline := time.Now().Add(60 * time.Second); !content.held.Load(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the indexing pass did not reach the held half in 60 s: %s", m.stderr.String())
		}
	}
	select {
	case err := <-first:
		if err != nil {
			t.Fatalf("reading an indexed member during the pass: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reading an indexed member did not finish in 30 s while the pass is held")
	}
	r, out := rangefsOut(t, t.TempDir(), nil, "status", mnt)
	if r.code != exitOK {
		t.Fatalf("status %s: exit %d: %s", mnt, r.code, r.stderr)
	}
	mm := archiveLineRE.FindStringSubmatch(string(out))
	if mm == nil {
		t.Fatalf("status shows no indexing line for a.tar.gz while its pass is held:\n%s", out)
	}
	pct, _ := strconv.Atoi(mm[3])
	n, _ := strconv.Atoi(mm[4])
	if mm[2] != humanBytes(int64(len(tgz))) || pct < 1 || pct > 99 || n < 2 || n >= 64 {
		t.Errorf("status while held: %q; want part of %s and some of the 64 members", mm[0], humanBytes(int64(len(tgz))))
	}
	t.Logf("%s", mm[0])
	content.release()
	last := filepath.Join(arch, archivetest.MemberName(63))
	done := make(chan error, 1)
	go func() { _, err := os.Stat(last); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stat of the last member after the release: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("stat of the last member still waiting 60 s after the release")
	}
	// The pass is done once the last member is listed and the gzip
	// trailer checked: shortly after.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r, out = rangefsOut(t, t.TempDir(), nil, "status", mnt)
		if r.code != exitOK {
			t.Fatalf("status %s: exit %d: %s", mnt, r.code, r.stderr)
		}
		if !strings.Contains(string(out), "archive a.tar.gz:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status still shows the pass 30 s after its last member was indexed:\n%s", out)
		}
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)
}
