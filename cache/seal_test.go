package cache

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// unseal removes dir's seal, as a crash would have left none.
func unseal(t *testing.T, dir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, sealName)); err != nil {
		t.Fatal(err)
	}
}

// A clean close seals the cache: the next Open trusts the verified chunks
// (no block is read to check them, and the File can be passed through at
// once); the seal is consumed, so a reopen after a crash checks again.
func TestSealTrustsCleanClose(t *testing.T) {
	m := blockMeta(3)
	dir := cacheDir(t)
	fillAndClose(t, dir, m)
	var rd *readCountingData
	wrap := Options{wrapData: func(d dataFile) dataFile { rd = &readCountingData{dataFile: d}; return rd }}
	f := openT(t, dir, m, newFake(m.Size), wrap)
	if !f.AllVerified() {
		t.Fatalf("after a clean close: %+v, want every chunk verified", f.Stats())
	}
	if _, err := os.Stat(filepath.Join(dir, sealName)); !os.IsNotExist(err) {
		t.Fatalf("the seal is still there while the cache is open: %v", err)
	}
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(bg, buf, m.ChunkSize); err != nil || !bytes.Equal(buf, want(m.ChunkSize, 4096)) {
		t.Fatalf("read: %v", err)
	}
	if got := rd.read(); got != 4096 {
		t.Fatalf("a sealed read read %d bytes of the data file, want only the read's", got)
	}
	// Simulate a crash of this session: no Close, so no seal; a new
	// process opens the directory.
	f.st.seal = nil
	f.Close()
	g := openT(t, dir, m, newFake(m.Size), Options{})
	if st := g.Stats(); st.Verified != 0 || st.Present != 3 {
		t.Fatalf("after an unsealed close: %+v, want 3 present, none verified", st)
	}
}

// A seal that does not match the data file (written since) or the index is
// ignored: every block is checked, and a bad one is never served.
func TestSealMismatchChecks(t *testing.T) {
	m := blockMeta(3)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
	}{
		{"data written", func(t *testing.T, dir string) {
			df, err := os.OpenFile(filepath.Join(dir, dataName), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Corrupt a byte of chunk 1, as a stray writer would.
			if _, err := df.WriteAt([]byte{0xff ^ want(m.ChunkSize+10, 1)[0]}, m.ChunkSize+10); err != nil {
				t.Fatal(err)
			}
			df.Close()
		}},
		{"data replaced", func(t *testing.T, dir string) {
			p := filepath.Join(dir, dataName)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[m.ChunkSize+10] ^= 0xff
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := cacheDir(t)
			fillAndClose(t, dir, m)
			tc.change(t, dir)
			src := newFake(m.Size)
			f := openT(t, dir, m, src, Options{})
			if st := f.Stats(); st.Verified != 0 {
				t.Fatalf("after a change behind the seal: %+v, want nothing verified", st)
			}
			buf := make([]byte, 4096)
			if _, err := f.ReadAt(bg, buf, m.ChunkSize); err != nil || !bytes.Equal(buf, want(m.ChunkSize, 4096)) {
				t.Fatalf("read of the changed block: %v (or wrong bytes)", err)
			}
			if len(src.Calls()) != 1 {
				t.Fatalf("fetches %v, want one refetch of the corrupt chunk", src.Calls())
			}
		})
	}
}

// Scrub ignores the seal, so Verify checks every block: a byte flipped
// behind an unchanged identity is found.
func TestScrubIgnoresSeal(t *testing.T) {
	m := blockMeta(3)
	dir := cacheDir(t)
	fillAndClose(t, dir, m)
	f := openT(t, dir, m, newFake(m.Size), Options{Scrub: true})
	if st := f.Stats(); st.Verified != 0 || st.Present != 3 {
		t.Fatalf("scrub open: %+v, want 3 present, none verified", st)
	}
	if err := f.Verify(bg); err != nil {
		t.Fatal(err)
	}
	if !f.AllVerified() {
		t.Fatalf("after Verify: %+v", f.Stats())
	}
}
