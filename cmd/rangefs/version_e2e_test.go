package main

// End-to-end tests of what identifies a remote version across sessions.

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/fetch/fetchtest"
)

// A server that sends only a weak ETag cannot prove that the chunks of an
// earlier run belong to the version it serves now. A resumed get against it,
// after the content changed (same size, same lack of Last-Modified), must
// not publish a file mixing the two versions: it starts again.
func TestGetResumeWeakETagNeverMixesVersions(t *testing.T) {
	const size = 8 << 20
	srv, _ := patternServer(t, size, 41, fetchtest.WithConnRate(1<<20),
		fetchtest.WithBehavior(fetchtest.Behavior{ETag: fetchtest.ETagWeak, NoLastModified: true}))
	dir := t.TempDir()
	cmd := exec.Command(binary, "get", "-q", "-j", "2", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // about 3 MiB of 8 arrive
	cmd.Process.Kill()
	cmd.Wait()
	_, st, err := cache.Inspect(filepath.Join(dir, "out.bin.rangefs"))
	if err != nil || st.Present == 0 || st.Present == st.Chunks {
		t.Fatalf("the first run left %d of %d chunks (%v); the test proves nothing", st.Present, st.Chunks, err)
	}

	v2 := fetchtest.Pattern(size, 42)
	srv.SetContent(fetchtest.DefaultPath, v2, size)
	srv.SetConnRate(0)
	r := rangefs(t, dir, "get", "-j", "2", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := fileSHA256(t, filepath.Join(dir, "out.bin")); got != v2.SHA256() {
		t.Fatalf("the resumed get published sha256 %s, not the new version %s: versions mixed", got, v2.SHA256())
	}
	if !strings.Contains(r.stderr, "discarded") {
		t.Errorf("the restart was not announced: %s", r.stderr)
	}
}
