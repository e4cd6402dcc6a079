package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"rangefs/fs/archive/archivetest"
)

// makeTree writes n regular files of varied size and content (text that
// compresses, random bytes that do not, empty files), some directories,
// an empty directory and a few symlinks under dir. It returns the names of
// the regular files.
func makeTree(t testing.TB, dir string, n int, seed uint64) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var files []string
	for i := range n {
		d := fmt.Sprintf("d%d/sub%d", i%7, i%3)
		if i%11 == 0 {
			d = "top"
		}
		name := path.Join(d, fmt.Sprintf("file %03d-é.%s", i, []string{"txt", "bin", "dat"}[i%3]))
		data := archivetest.MemberData(rng, i, 40<<10)
		if i == 1 || i == 2 || i == 3 {
			// A few members big enough for windows and restarts to matter.
			data = bigContent(rng, 700<<10, i == 3)
		}
		writeFile(t, filepath.Join(dir, name), data)
		files = append(files, name)
	}
	if err := os.MkdirAll(filepath.Join(dir, "empty dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, target := range []string{"file 000-é.txt", "../d1/sub1", "sub0/missing"} {
		if err := os.Symlink(target, filepath.Join(dir, "top", fmt.Sprintf("link%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// bigContent is size bytes of text that compresses, or random bytes.
func bigContent(rng *rand.Rand, size int, random bool) []byte {
	data := make([]byte, 0, size)
	for len(data) < size {
		if random {
			data = append(data, byte(rng.Uint32()))
		} else {
			data = fmt.Appendf(data, "%08d %x\n", len(data), rng.Uint32()%4096)
		}
	}
	return data[:size]
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSHA(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return sha(b)
}

// countingReaderAt counts the reads and bytes that reach an io.ReaderAt.
type countingReaderAt struct {
	r     io.ReaderAt
	calls atomic.Int64
	bytes atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

// openFile returns an os.File the test closes, and its size.
func openFile(t testing.TB, name string) (*os.File, int64) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return f, st.Size()
}

// toolListing turns a tool's listing (one name a line) into the set of
// names the package promises: cleaned, without a trailing slash, without
// the root, each once.
func toolListing(t testing.TB, out string) []string {
	t.Helper()
	seen := map[string]bool{}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			continue
		}
		n, _, root, err := cleanName(l)
		if err != nil {
			t.Fatalf("tool listed %q: %v", l, err)
		}
		if root || seen[n] {
			continue
		}
		seen[n] = true
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// listedNames are the archive's explicit (not implicit) entry names, sorted.
func listedNames(a *Archive) []string {
	var names []string
	for _, e := range a.Entries() {
		if !e.Implicit {
			names = append(names, e.Name)
		}
	}
	sort.Strings(names)
	return names
}

// readAll reads a member through its Reader in pieces of the given size.
func readAll(t testing.TB, a *Archive, name string, piece int) []byte {
	t.Helper()
	r, err := a.Open(name)
	if err != nil {
		t.Fatalf("open %q: %v", name, err)
	}
	defer r.Close()
	var out []byte
	buf := make([]byte, piece)
	for off := int64(0); ; {
		n, err := r.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read %q at %d: %v", name, off, err)
		}
		if n == 0 {
			t.Fatalf("read %q at %d: no progress", name, off)
		}
	}
	if int64(len(out)) != r.Size() {
		t.Fatalf("%q: read %d bytes, size %d", name, len(out), r.Size())
	}
	return out
}

// checkExtracted compares every regular member with the file the real tool
// extracted under dir, and returns how many it compared.
func checkExtracted(t testing.TB, a *Archive, dir string) int {
	return checkExtractedEvery(t, a, dir, 1)
}

// checkExtractedEvery compares every k-th regular member.
func checkExtractedEvery(t testing.TB, a *Archive, dir string, k int) int {
	t.Helper()
	n, i := 0, 0
	for _, e := range a.Entries() {
		if e.Mode.Type() != 0 {
			continue
		}
		if i++; (i-1)%k != 0 {
			continue
		}
		got := readAll(t, a, e.Name, 64<<10)
		if want := fileSHA(t, filepath.Join(dir, filepath.FromSlash(e.Name))); sha(got) != want {
			t.Fatalf("%q: sha256 %s, extracted %s", e.Name, sha(got), want)
		}
		n++
	}
	return n
}

// randomReads checks many preads of random offsets and sizes against want,
// through one Reader (so the window and restarts are exercised).
func randomReads(t testing.TB, a *Archive, name string, want []byte, seed uint64) {
	t.Helper()
	r, err := a.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range 200 {
		off := rng.Int64N(int64(len(want)) + 10)
		n := rng.IntN(200<<10) + 1
		buf := make([]byte, n)
		got, err := r.ReadAt(buf, off)
		wantN := max(0, min(n, len(want)-int(off)))
		if got != wantN || (got < n && err != io.EOF) || (got == n && err != nil && err != io.EOF) {
			t.Fatalf("read %d: ReadAt(%d bytes, %d) = %d, %v; want %d", i, n, off, got, err, wantN)
		}
		if !bytes.Equal(buf[:got], want[off:off+int64(got)]) {
			t.Fatalf("read %d: ReadAt(%d bytes, %d): wrong bytes", i, n, off)
		}
	}
}

const fsModeSymlink = fs.ModeSymlink

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed+1)) }
