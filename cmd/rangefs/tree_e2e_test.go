package main

// End-to-end tests of mounted trees: directory URLs, index pages, S3 and
// manifests, against real servers the tests start on loopback.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"rangefs/fetch/fetchtest"
	"rangefs/fetch/listing/listingtest"
)

// findFiles runs find(1) over dir and returns the files' paths below it.
func findFiles(t *testing.T, dir string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "find", dir, "-type", "f").Output()
	if err != nil {
		t.Fatalf("find %s: %v", dir, err)
	}
	var paths []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			paths = append(paths, strings.TrimPrefix(l, dir+"/"))
		}
	}
	slices.Sort(paths)
	return paths
}

func treePaths(files []testTreeFile) []string {
	var ps []string
	for _, f := range files {
		ps = append(ps, f.path)
	}
	slices.Sort(ps)
	return ps
}

// checkSampled compares the sha256 of every 37th file in the mount with the
// tree's, and fails on any difference.
func checkSampled(t *testing.T, mnt string, files []testTreeFile) {
	t.Helper()
	for i := 0; i < len(files); i += 37 {
		f := files[i]
		if got := fileSHA256(t, filepath.Join(mnt, f.path)); got != f.sha256 {
			t.Errorf("%s: sha256 %s, want %s", f.path, got, f.sha256)
		}
	}
}

func samePaths(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		missing, extra := 0, 0
		for _, p := range want {
			if _, ok := slices.BinarySearch(got, p); !ok {
				missing++
			}
		}
		for _, p := range got {
			if _, ok := slices.BinarySearch(want, p); !ok {
				extra++
			}
		}
		t.Fatalf("find lists %d paths, want %d (%d missing, %d extra; first: %q)", len(got), len(want), missing, extra, got[:min(3, len(got))])
	}
}

// A directory served by nginx, as an HTML index and as autoindex json, mounts
// as the mount's root: find lists exactly the tree, listing it fetches no
// file (only directory GETs), and sampled files read right.
func TestMountNginxTree(t *testing.T) {
	needFUSE(t)
	tree, files := makeTestTree(t, 0)
	ng := listingtest.StartNginx(t, tree)
	for _, format := range []string{"html", "json"} {
		t.Run(format, func(t *testing.T) {
			mnt := t.TempDir()
			before := len(ng.Requests(t))
			startMount(t, "d0", "--cache-dir", t.TempDir(), "--no-prefetch", ng.URL+"/"+format+"/", mnt)
			samePaths(t, findFiles(t, mnt), treePaths(files))
			for _, r := range ng.Requests(t)[before:] {
				if r.Method != "GET" || !strings.HasSuffix(r.URI, "/") {
					t.Errorf("listing the tree sent %s %s: a listing must only GET directories", r.Method, r.URI)
				}
			}
			checkSampled(t, mnt, files)
		})
	}
}

// The URL of an nginx directory without its final '/' answers with a
// redirect to an index page, and still mounts as a directory (it used to fail
// with "server did not tell the file size").
func TestMountNginxDirWithoutSlash(t *testing.T) {
	needFUSE(t)
	tree, _ := makeTestTree(t, 0)
	ng := listingtest.StartNginx(t, tree)
	mnt := t.TempDir()
	startMount(t, "e3", "--cache-dir", t.TempDir(), "--no-prefetch", ng.URL+"/html/d2", mnt)
	want := fileContent("d2/e3/f4.bin", int64((200+34)*97%9000))
	got, err := os.ReadFile(filepath.Join(mnt, "e3", "f4.bin"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read d2/e3/f4.bin through the mount: %d bytes, %v; want %d right bytes", len(got), err, len(want))
	}
}

// A URL that is neither a file rangefs can mount nor a listing fails before
// mounting, with both reasons and what to do.
func TestMountNeitherFileNorListing(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(bytes.Repeat([]byte("x"), 1000)) // no ranges, no length: streamed
		w.(http.Flusher).Flush()
	}))
	defer srv.Close()
	r := rangefs(t, t.TempDir(), "mount", "--cache-dir", t.TempDir(), srv.URL+"/blob", t.TempDir())
	if r.code != exitNetwork {
		t.Errorf("exit code %d, want %d", r.code, exitNetwork)
	}
	for _, want := range []string{"neither a file rangefs can mount", "nor a directory listing", "end in '/'", "--manifest"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q: %s", want, r.stderr)
		}
	}
}

// python3 -m http.server lists directories but ignores Range: the tree
// lists, and opening a file fails clearly (EOPNOTSUPP, and the log says why).
func TestMountPythonHTTPServer(t *testing.T) {
	needFUSE(t)
	tree, files := makeTestTree(t, 0)
	base := listingtest.StartPython(t, tree)
	mnt := t.TempDir()
	m := startMount(t, "d0", "--cache-dir", t.TempDir(), base+"/", mnt)
	samePaths(t, findFiles(t, mnt), treePaths(files))
	_, err := os.ReadFile(filepath.Join(mnt, "d1", "e1", "f1.bin"))
	if !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("reading a file of a server that ignores Range: %v, want EOPNOTSUPP", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(m.stderr.String(), "cannot be read in place") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(m.stderr.String(), "cannot be read in place") {
		t.Errorf("the log does not say why the open failed: %s", m.stderr.String())
	}
}

// countingFileServer is http.FileServer (an HTML index, ranges, no exact
// sizes in its listing) counting HEADs in flight.
type countingFileServer struct {
	h             http.Handler
	heads, maxNow atomic.Int64
	mu            sync.Mutex
	bodies        int // GETs of files
}

func (c *countingFileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		n := c.heads.Add(1)
		for {
			m := c.maxNow.Load()
			if n <= m || c.maxNow.CompareAndSwap(m, n) {
				break
			}
		}
		// A HEAD that takes a while, as over a real network: serial
		// probes would never overlap.
		time.Sleep(20 * time.Millisecond)
		defer c.heads.Add(-1)
	}
	if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/") {
		c.mu.Lock()
		c.bodies++
		c.mu.Unlock()
	}
	c.h.ServeHTTP(w, r)
}

// ls -l of a directory whose index page gives no exact sizes probes its
// files in parallel, within the connection limit, and shows exact sizes.
func TestMountIndexPageProbesInParallel(t *testing.T) {
	needFUSE(t)
	tree, files := makeTestTree(t, 200)
	cs := &countingFileServer{h: http.FileServer(http.Dir(tree))}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	mnt := t.TempDir()
	startMount(t, "flat", "--cache-dir", t.TempDir(), "-j", "4", srv.URL+"/", mnt)
	ents, err := os.ReadDir(filepath.Join(mnt, "flat"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, f := range files {
		want[f.path] = f.size
	}
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join(mnt, "flat", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != want["flat/"+e.Name()] {
			t.Errorf("%s: size %d, want %d", e.Name(), fi.Size(), want["flat/"+e.Name()])
		}
	}
	if len(ents) != 200 {
		t.Fatalf("flat lists %d names, want 200", len(ents))
	}
	if m := cs.maxNow.Load(); m < 2 || m > 4 {
		t.Errorf("at most %d HEADs were in flight at once; want 2 to 4 (-j 4): probes must run in parallel within the limit", m)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.bodies != 0 {
		t.Errorf("ls -l fetched %d file bodies", cs.bodies)
	}
}

// ls -l of a 1,000-entry directory whose listing has exact sizes answers
// from the listing: no probe, and well within a second.
func TestMountExactListingLsIsFast(t *testing.T) {
	needFUSE(t)
	tree, files := makeTestTree(t, 1000)
	ng := listingtest.StartNginx(t, tree)
	mnt := t.TempDir()
	startMount(t, "flat", "--cache-dir", t.TempDir(), ng.URL+"/json/", mnt)
	// nginx logs a request after it has sent the answer: under load the
	// mount's own first listing of the root may be logged after the mount is
	// up, and would then be counted as the ls's.
	listedRoot := func() bool {
		return slices.ContainsFunc(ng.Requests(t), func(r listingtest.Request) bool { return r.URI == "/json/" })
	}
	for end := time.Now().Add(10 * time.Second); !listedRoot(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("nginx has not logged the mount's listing of the root after 10 s")
		}
	}
	before := len(ng.Requests(t))
	start := time.Now()
	out, err := exec.Command("ls", "-l", filepath.Join(mnt, "flat")).Output()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(out), "\n"); lines != 1001 { // "total" and 1,000 files
		t.Fatalf("ls -l printed %d lines, want 1001", lines)
	}
	if took > time.Second {
		t.Errorf("the first ls -l of 1,000 entries took %v, want under 1 s", took)
	}
	for _, r := range ng.Requests(t)[before:] {
		if r.Method != "GET" || r.URI != "/json/flat/" {
			t.Errorf("ls -l sent %s %s", r.Method, r.URI)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, files[1000+123].path), &st); err != nil || st.Size != files[1000+123].size {
		t.Errorf("size of %s: %d (%v), want %d", files[1000+123].path, st.Size, err, files[1000+123].size)
	}
}

// Two URLs with the same file name keep the suffixing, and the mount says
// which name it gave to which URL; a directory URL appears by its name.
func TestMountSaysWhichNameIsWhichURL(t *testing.T) {
	needFUSE(t)
	tree, _ := makeTestTree(t, 0)
	ng := listingtest.StartNginx(t, tree)
	mnt := t.TempDir()
	a, b := ng.URL+"/json/d1/e1/f1.bin", ng.URL+"/json/d2/e2/f1.bin"
	m := startMount(t, "f1.bin", "--cache-dir", t.TempDir(), "--no-prefetch", a, b, ng.URL+"/json/d3/", mnt)
	for _, want := range []string{"f1.bin is " + a, "f1-2.bin is " + b, "d3 is " + ng.URL + "/json/d3/"} {
		if !strings.Contains(m.stderr.String(), want) {
			t.Errorf("the mount does not say %q: %s", want, m.stderr.String())
		}
	}
	got, err := os.ReadFile(filepath.Join(mnt, "f1-2.bin"))
	if err != nil || !bytes.Equal(got, fileContent("d2/e2/f1.bin", int64((200+20+1)*97%9000))) {
		t.Errorf("f1-2.bin is not the second URL: %d bytes, %v", len(got), err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "d3", "e9", "f9.bin")); err != nil {
		t.Errorf("the directory URL is not mounted by its name: %v", err)
	}
}

// After SIGHUP a changed remote directory is listed again: a new file
// appears, a file with a new size is read in its new version by new opens,
// while a handle opened before keeps its version or fails with ESTALE.
func TestMountSIGHUPRelistsAndNewVersions(t *testing.T) {
	needFUSE(t)
	tree, _ := makeTestTree(t, 0)
	ng := listingtest.StartNginx(t, tree)
	mnt := t.TempDir()
	m := startMount(t, "e0", "--cache-dir", t.TempDir(), "--no-prefetch", "--dir-cache-time", "1h", ng.URL+"/json/d0/", mnt)
	path := filepath.Join(mnt, "e0", "f1.bin")
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	newContent := []byte("a new version, of another size\n")
	if err := os.WriteFile(filepath.Join(tree, "d0", "e0", "f1.bin"), newContent, 0o644); err != nil {
		t.Fatal(err)
	}
	// mtime granularity of autoindex is a second: make the change visible.
	future := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(tree, "d0", "e0", "f1.bin"), future, future)
	if err := os.WriteFile(filepath.Join(tree, "d0", "e0", "new.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "e0", "new.txt")); err == nil {
		t.Fatal("a new remote file is visible before the listing is refreshed: the listing is not cached")
	}
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(mnt, "e0", "new.txt"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new.txt did not appear within 10 s of SIGHUP: %v; log: %s", err, m.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, newContent) {
		t.Fatalf("after SIGHUP a new open reads %q (%v), want the new version", got, err)
	}
	buf := make([]byte, len(old))
	n, err := h.ReadAt(buf, 0)
	if err == nil || n == len(old) {
		if !bytes.Equal(buf[:n], old) {
			t.Fatalf("the handle opened before the change read %d bytes that are not the old version", n)
		}
	} else if !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("the handle opened before the change: %v, want the old bytes or ESTALE", err)
	}
}

// Reading 300 tree files one after another leaves few caches open: they
// are opened on first use and closed when idle.
func TestMountTreeFilesAreClosedWhenIdle(t *testing.T) {
	needFUSE(t)
	tree, files := makeTestTree(t, 0)
	ng := listingtest.StartNginx(t, tree)
	mnt := t.TempDir()
	m := startMount(t, "d0", "--cache-dir", t.TempDir(), "--no-prefetch", ng.URL+"/json/", mnt)
	before := fdCount(t, m.cmd.Process.Pid)
	for _, f := range files[:300] {
		if _, err := os.ReadFile(filepath.Join(mnt, f.path)); err != nil {
			t.Fatal(err)
		}
	}
	after := fdCount(t, m.cmd.Process.Pid)
	// Each open cache holds its data file and its index: 300 of them would
	// be 600 descriptors. A few dozen idle ones may stay open.
	if after-before > 128 {
		t.Errorf("after reading 300 files the mount holds %d more descriptors (%d -> %d); idle caches are not closed", after-before, before, after)
	}
}

// A manifest mounts with no request at all, and find over it sends none.
// A declared SHA256 is checked once the file is completely cached and shown
// as an xattr; a file that does not match fails its reads. rangefs status
// shows nested files.
func TestMountManifest(t *testing.T) {
	needFUSE(t)
	tree, files := makeTestTree(t, 0)
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.FileServer(http.Dir(tree)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	var mf strings.Builder
	mf.WriteString("# a manifest of the test tree\n")
	for i, f := range files {
		sum := f.sha256
		if i == 5 {
			sum = strings.Repeat("0", 64) // declared wrong
		}
		fmt.Fprintf(&mf, "%s\t%s/%s\t%d\t%s\n", f.path, srv.URL, f.path, f.size, sum)
	}
	manifest := filepath.Join(t.TempDir(), "tree.tsv")
	if err := os.WriteFile(manifest, []byte(mf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	startMount(t, "d0", "--cache-dir", t.TempDir(), "--manifest", manifest, mnt)
	samePaths(t, findFiles(t, mnt), treePaths(files))
	if n := requests.Load(); n != 0 {
		t.Fatalf("mounting a manifest and running find sent %d requests, want 0", n)
	}

	good := filepath.Join(mnt, files[7].path)
	if got := fileSHA256(t, good); got != files[7].sha256 {
		t.Fatalf("%s: sha256 %s, want %s", files[7].path, got, files[7].sha256)
	}
	if v := waitXattr(t, good, "sha256_check", "ok"); v != "ok" {
		t.Errorf("sha256_check of a good file: %q, want ok", v)
	}
	if v := xattr(t, good, "sha256"); v != files[7].sha256 {
		t.Errorf("sha256 xattr %q, want %q", v, files[7].sha256)
	}
	bad := filepath.Join(mnt, files[5].path)
	if _, err := os.ReadFile(bad); err != nil {
		t.Fatalf("the first read of the mismatching file: %v", err)
	}
	if v := waitXattr(t, bad, "sha256_check", "mismatch"); !strings.HasPrefix(v, "mismatch") {
		t.Fatalf("sha256_check of a file that does not match: %q", v)
	}
	if _, err := os.ReadFile(bad); !errors.Is(err, syscall.EIO) {
		t.Errorf("a read after the mismatch was found: %v, want EIO", err)
	}

	out, err := exec.Command(binary, "status", mnt).Output()
	if err != nil {
		t.Fatalf("rangefs status: %v", err)
	}
	if !strings.Contains(string(out), files[7].path) {
		t.Errorf("rangefs status does not show the nested file %s:\n%s", files[7].path, out)
	}
}

func xattr(t *testing.T, path, name string) string {
	t.Helper()
	buf := make([]byte, 512)
	n, err := syscall.Getxattr(path, "user.rangefs."+name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, name, err)
	}
	return string(buf[:n])
}

// waitXattr polls, bounded, until the attribute starts with prefix.
func waitXattr(t *testing.T, path, name, prefix string) string {
	t.Helper()
	var v string
	for range 200 {
		if v = xattr(t, path, name); strings.HasPrefix(v, prefix) {
			return v
		}
		time.Sleep(25 * time.Millisecond)
	}
	return v
}

// fakeS3 is gofakes3 in process on loopback, recording each request.
type fakeS3 struct {
	url  string
	mu   sync.Mutex
	reqs []*http.Request
}

func (f *fakeS3) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// newFakeS3 serves bucket "bkt" holding the files of tree below prefix.
func newFakeS3(t *testing.T, tree string, files []testTreeFile, prefix string) *fakeS3 {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(tree, f.path))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := backend.PutObject("bkt", prefix+f.path, map[string]string{}, bytes.NewReader(b), int64(len(b)), nil); err != nil {
			t.Fatal(err)
		}
	}
	h := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server()
	f := &fakeS3{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// An S3 prefix mounts as a tree, anonymously and signed: find lists exactly
// the objects with list requests only, sampled objects read right, and in
// signed mode every request, list and object alike, is signed with the
// credentials of the environment.
func TestMountS3(t *testing.T) {
	needFUSE(t)
	tree, files := makeTestTree(t, 0)
	for _, signed := range []bool{false, true} {
		t.Run(map[bool]string{false: "anonymous", true: "signed"}[signed], func(t *testing.T) {
			listingtest.NoAWSEnv(t)
			args := []string{"--cache-dir", t.TempDir(), "--no-prefetch", "--s3-endpoint", ""}
			if signed {
				t.Setenv("AWS_ACCESS_KEY_ID", "AKIDRANGEFSTEST")
				t.Setenv("AWS_SECRET_ACCESS_KEY", "test/secret")
				t.Setenv("AWS_REGION", "eu-west-3")
			} else {
				args = append(args, "--s3-anonymous")
			}
			s3 := newFakeS3(t, tree, files, "data/")
			args[4] = s3.url
			mnt := t.TempDir()
			startMount(t, "d0", append(args, "s3://bkt/data/", mnt)...)
			samePaths(t, findFiles(t, mnt), treePaths(files))
			for _, r := range s3.requests() {
				if r.Method != "GET" || r.URL.Query().Get("list-type") != "2" {
					t.Errorf("listing sent %s %s", r.Method, r.URL)
				}
			}
			listed := len(s3.requests())
			checkSampled(t, mnt, files)
			reqs := s3.requests()
			if len(reqs) == listed {
				t.Fatal("reading objects sent no request")
			}
			for _, r := range reqs {
				auth := r.Header.Get("Authorization") + r.URL.Query().Get("X-Amz-Credential")
				if signed != strings.Contains(auth, "AKIDRANGEFSTEST/") {
					t.Errorf("%s %s: credential %q; signed %v", r.Method, r.URL.Path, auth, signed)
				}
				if signed && r.Header.Get("Authorization") == "" && r.URL.Query().Get("X-Amz-Signature") == "" {
					t.Errorf("%s %s carries no signature", r.Method, r.URL.Path)
				}
			}
		})
	}
}

// A tree file whose remote changes under a reader: that reader gets ESTALE,
// and the next open reads the whole new version, none of the old version's
// pages the kernel had cached.
func TestMountTreeFileChangedAtReadReopensNewVersion(t *testing.T) {
	needFUSE(t)
	const size = 8 << 20
	srv, _ := patternServer(t, size, 21)
	manifest := filepath.Join(t.TempDir(), "m.tsv")
	if err := os.WriteFile(manifest, []byte("dir/file.bin\t"+srv.URL()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	startMount(t, "dir", "--cache-dir", t.TempDir(), "--no-prefetch", "--chunk-size", "256K", "--manifest", manifest, mnt)
	path := filepath.Join(mnt, "dir", "file.bin")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	v2 := fetchtest.Pattern(size, 22)
	srv.SetContent(fetchtest.DefaultPath, v2, size)
	_, err = f.ReadAt(buf, 6<<20)
	f.Close()
	if !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("read of an uncached range after the remote changed: %v, want ESTALE", err)
	}
	if got := fileSHA256(t, path); got != v2.SHA256() {
		t.Fatalf("a new open after the change: sha256 %s, want the new version's %s", got, v2.SHA256())
	}
}

// pageCacheBytes is how many bytes of path the kernel holds in its page
// cache, by fincore (util-linux).
func pageCacheBytes(t *testing.T, path string) int64 {
	t.Helper()
	out, err := exec.Command("fincore", "--bytes", "--noheadings", "--output", "RES", path).Output()
	if err != nil {
		t.Fatalf("fincore %s: %v", path, err)
	}
	var n int64
	if _, err := fmt.Sscan(string(out), &n); err != nil {
		t.Fatalf("fincore said %q: %v", out, err)
	}
	return n
}

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var rel []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	var ma, mi int
	fmt.Sscanf(string(rel), "%d.%d", &ma, &mi)
	return ma > major || ma == major && mi >= minor
}

// A file of a tree mount (here an nginx listing) opened before it is all
// cached is read with direct I/O, as a file named on the command line is:
// the kernel keeps no page-cache copy of what was read, and the bytes are
// right. With --no-direct-io the same read fills the page cache.
func TestMountTreeFileFillingUsesDirectIO(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("fincore"); err != nil {
		t.Skip("fincore (util-linux) is not installed")
	}
	if !kernelAtLeast(t, 6, 6) {
		t.Skip("before Linux 6.6 the kernel cannot mmap direct-I/O files, so rangefs keeps the page cache")
	}
	tree := t.TempDir()
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(tree, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	ng := listingtest.StartNginx(t, tree)
	for _, c := range []struct {
		name   string
		flags  []string
		cached bool
	}{{"default", nil, false}, {"no-direct-io", []string{"--no-direct-io"}, true}} {
		t.Run(c.name, func(t *testing.T) {
			mnt := t.TempDir()
			args := append([]string{"--cache-dir", t.TempDir(), "--no-prefetch"}, c.flags...)
			startMount(t, "big.bin", append(args, ng.URL+"/json/", mnt)...)
			path := filepath.Join(mnt, "big.bin")
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			if _, err := io.ReadFull(f, buf); err != nil || !bytes.Equal(buf, data[:len(buf)]) {
				t.Fatalf("reading the first MiB: %v, or wrong bytes", err)
			}
			got := pageCacheBytes(t, path)
			if c.cached && got < int64(len(buf)) {
				t.Errorf("%d bytes in the page cache after reading %d", got, len(buf))
			}
			if !c.cached && got != 0 {
				t.Errorf("%d bytes in the page cache after reading a filling tree file: not direct I/O", got)
			}
		})
	}
}
