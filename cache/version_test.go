package cache

import (
	"bytes"
	"os"
	"path/filepath"
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
