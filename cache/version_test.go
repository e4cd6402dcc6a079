package cache

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func inodeOf(t *testing.T, fi os.FileInfo) uint64 {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("skipping: no inode numbers on this platform")
	}
	return st.Ino
}

// A handle on the data file that outlives its session (a passthrough open
// the kernel keeps after the daemon is gone) must keep reading the bytes it
// was given. A later session that discards the cache therefore replaces the
// data file with a new one instead of truncating or rewriting it in place.
func TestDiscardReplacesDataFile(t *testing.T) {
	base := testMeta(8 * testChunk)
	tests := []struct {
		name   string
		change func(m *Meta)
		patch  func(t *testing.T, dir string)
	}{
		{name: "remote changed", change: func(m *Meta) { m.ETag = `"v2"` }},
		{name: "chunk size", change: func(m *Meta) { m.ChunkSize *= 2 }},
		{name: "size", change: func(m *Meta) { m.Size -= 1000 }},
		{name: "index unreadable", patch: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, indexName), bytes.Repeat([]byte("garbage!"), 2048), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := cacheDir(t)
			fillAndClose(t, dir, base)
			old, err := os.Open(filepath.Join(dir, dataName))
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			oldFi, err := old.Stat()
			if err != nil {
				t.Fatal(err)
			}
			m := base
			if tc.change != nil {
				tc.change(&m)
			}
			if tc.patch != nil {
				tc.patch(t, dir)
			}
			f := openT(t, dir, m, newFake(m.Size), Options{})
			if f.Discarded() == "" {
				t.Fatal("the old cache was not discarded; the test proves nothing")
			}
			newFi, err := os.Stat(f.DataPath())
			if err != nil {
				t.Fatal(err)
			}
			if inodeOf(t, newFi) == inodeOf(t, oldFi) {
				t.Fatalf("after a discard the data file is the same inode %d: an old handle would see it rewritten", inodeOf(t, newFi))
			}
			if err := f.Fill(bg); err != nil {
				t.Fatal(err)
			}
			// The old handle still holds exactly the old version, whole.
			got := make([]byte, base.Size+1)
			n, _ := old.ReadAt(got, 0)
			if int64(n) != base.Size || !bytes.Equal(got[:n], want(0, base.Size)) {
				t.Fatalf("the old handle reads %d bytes that differ from what it was given (%d bytes)", n, base.Size)
			}
		})
	}
}

// What identifies a version across sessions: a strong ETag proves it; a
// Last-Modified proves it only when the server's Date at the cache's
// creation was well after it (a change could otherwise keep the same
// second); a weak ETag, or nothing, never does. Every validator sent is also
// compared, and a cache whose version cannot be proven the same is
// discarded before any byte of it is served.
func TestVersionIdentityAcrossSessions(t *testing.T) {
	const (
		lm      = "Mon, 02 Jan 2006 15:04:05 GMT"
		lmLater = "Mon, 02 Jan 2006 15:04:06 GMT"
		dateOld = "Tue, 03 Jan 2006 15:04:05 GMT" // a day after lm
		dateNew = "Mon, 02 Jan 2006 15:04:05 GMT" // the same second as lm
	)
	meta := func(etag, weak, lastMod, date string) Meta {
		return Meta{Size: 8 * testChunk, ChunkSize: testChunk, ETag: etag, WeakETag: weak, LastModified: lastMod, Date: date}
	}
	tests := []struct {
		name        string
		first, then Meta
		keep        bool
		word        string // in Discarded() when not kept
	}{
		{"strong ETag", meta(`"a"`, "", "", ""), meta(`"a"`, "", "", "later"), true, ""},
		{"strong ETag and a recent Last-Modified", meta(`"a"`, "", lm, dateNew), meta(`"a"`, "", lm, dateNew), true, ""},
		{"strong ETag changed", meta(`"a"`, "", lm, dateOld), meta(`"b"`, "", lm, dateOld), false, "ETag"},
		{"weak ETag changed, same Last-Modified", meta("", `W/"a"`, lm, dateOld), meta("", `W/"b"`, lm, dateOld), false, "weak ETag"},
		{"weak ETag changed, no Last-Modified", meta("", `W/"a"`, "", dateOld), meta("", `W/"b"`, "", dateOld), false, "weak ETag"},
		{"weak ETag appears", meta("", "", lm, dateOld), meta("", `W/"b"`, lm, dateOld), false, "weak ETag"},
		{"same weak ETag only", meta("", `W/"a"`, "", dateOld), meta("", `W/"a"`, "", dateOld), false, "proven"},
		{"same weak ETag and an old Last-Modified", meta("", `W/"a"`, lm, dateOld), meta("", `W/"a"`, lm, dateOld), true, ""},
		{"old Last-Modified only", meta("", "", lm, dateOld), meta("", "", lm, dateNew), true, ""},
		{"Last-Modified changed", meta("", "", lm, dateOld), meta("", "", lmLater, dateOld), false, "Last-Modified"},
		{"Last-Modified in the same second as the Date", meta("", "", lm, dateNew), meta("", "", lm, dateOld), false, "proven"},
		{"Last-Modified without a Date", meta("", "", lm, ""), meta("", "", lm, dateOld), false, "proven"},
		{"no validator at all", meta("", "", "", dateOld), meta("", "", "", dateOld), false, "proven"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := cacheDir(t)
			fillAndClose(t, dir, tc.first)
			src := newFake(tc.then.Size)
			f := openT(t, dir, tc.then, src, Options{})
			st := f.Stats()
			if tc.keep {
				if f.Discarded() != "" || st.Present != st.Chunks {
					t.Fatalf("the same proven version was discarded (%q, %d of %d chunks kept)", f.Discarded(), st.Present, st.Chunks)
				}
				return
			}
			if st.Present != 0 {
				t.Fatalf("%d chunks of a version that cannot be proven the same are kept", st.Present)
			}
			if !strings.Contains(f.Discarded(), tc.word) {
				t.Fatalf("Discarded() = %q, want it to mention %q", f.Discarded(), tc.word)
			}
			readAll(t, f, 100000)
			if src.NCalls() == 0 {
				t.Fatal("nothing refetched after the discard")
			}
		})
	}
}
