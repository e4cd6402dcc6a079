// Package archivetest holds what the archive tests of fs/archive, fs and
// cmd/rangefs share: running the real archive tools (zip, tar, gzip…) with
// a bound, comparing a listing with a tool's, and making archives in
// process. It imports only the standard library and is for tests only.
package archivetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	iofs "io/fs"
	"math/rand/v2"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// toolTimeout bounds every program Run starts.
const toolTimeout = 2 * time.Minute

// NeedTools skips the test, saying why and which Debian package has it,
// when a program it runs is not installed (.ci/run installs them).
func NeedTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s is not installed (.ci/run installs it: apt-get install %s): %v", n, aptPackage(n), err)
		}
	}
}

func aptPackage(tool string) string {
	switch tool {
	case "bsdtar":
		return "libarchive-tools"
	case "ls", "readlink":
		return "coreutils"
	}
	return tool
}

// Run runs a program in dir, killed after 2 minutes, and fails the test
// with its stderr when it fails. It returns the program's stdout. Keep dir
// outside a FUSE mount the test process serves itself: the child would
// wait on that mount between fork and exec.
func Run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			t.Fatalf("%s %s: still running after %v", name, strings.Join(args, " "), toolTimeout)
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// Shell runs a bash command line in dir (set -eo pipefail), as Run does.
func Shell(t testing.TB, dir, script string) string {
	t.Helper()
	return Run(t, dir, "bash", "-c", "set -eo pipefail; "+script)
}

// ToolNames turns a tool's listing (`unzip -Z1`, `tar tf`: one name a
// line) into sorted names without "./" or a trailing slash, each once,
// with the directories they imply.
func ToolNames(listing string) []string {
	set := map[string]bool{}
	for _, l := range strings.Split(listing, "\n") {
		l = strings.TrimPrefix(strings.TrimSuffix(l, "/"), "./")
		for n := l; n != "." && n != ""; n = path.Dir(n) {
			set[n] = true
		}
	}
	return sortedKeys(set)
}

// WalkNames lists everything below dir, slash-separated, relative to it
// and sorted; it follows no symlink.
func WalkNames(t testing.TB, dir string) []string {
	t.Helper()
	set := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			set[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return sortedKeys(set)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// EqualNames reports whether two sorted listings are equal, and marks the
// test failed, naming the extra and the missing names, when they are not.
func EqualNames(t testing.TB, what string, got, want []string) bool {
	t.Helper()
	if slices.Equal(got, want) {
		return true
	}
	gs, ws := map[string]bool{}, map[string]bool{}
	for _, g := range got {
		gs[g] = true
	}
	for _, w := range want {
		ws[w] = true
	}
	var extra, missing []string
	for _, g := range got {
		if !ws[g] {
			extra = append(extra, g)
		}
	}
	for _, w := range want {
		if !gs[w] {
			missing = append(missing, w)
		}
	}
	t.Errorf("%s: %d names, want %d; extra %q; missing %q", what, len(got), len(want), extra, missing)
	return false
}

// TarGz makes, in process, a gzipped tar of n members named m0000.bin…
// of size bytes each, bytes of 6 bits that deflate to about three
// quarters (as the benchmark's do), and returns it with the members'
// contents. seed picks the bytes.
func TarGz(t testing.TB, n, size int, seed uint64) ([]byte, [][]byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, 6)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	members := make([][]byte, n)
	for i := range n {
		b := make([]byte, size)
		for j := range b {
			b[j] = 'A' + byte(rng.Uint32())&0x3f
		}
		members[i] = b
		hdr := &tar.Header{Name: MemberName(i), Mode: 0o644, Size: int64(size), ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), members
}

// MemberName is the name of TarGz's member i.
func MemberName(i int) string { return fmt.Sprintf("m%04d.bin", i) }

// SetTarSize writes size into a tar header block (base-256, so any size
// fits) and fixes its checksum: a header that lies about its member.
func SetTarSize(hdr []byte, size int64) {
	f := hdr[124:136]
	clear(f)
	f[0] = 0x80
	binary.BigEndian.PutUint64(f[4:], uint64(size))
	copy(hdr[148:156], "        ")
	sum := 0
	for _, b := range hdr[:512] {
		sum += int(b)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// MemberData returns the content of member i of a generated test tree, drawn from rng
// by the member's kind (i%5): empty, text lines up to textMax bytes (two kinds), random
// bytes, or one repeated byte.
func MemberData(rng *rand.Rand, i, textMax int) []byte {
	switch i % 5 {
	case 1, 2:
		var b strings.Builder
		for b.Len() < rng.IntN(textMax) {
			fmt.Fprintf(&b, "line %d of member %d: %x\n", b.Len(), i, rng.Uint32()%64)
		}
		return []byte(b.String())
	case 3:
		data := make([]byte, rng.IntN(20<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		return data
	case 4:
		return bytes.Repeat([]byte{byte(i)}, rng.IntN(8<<10))
	}
	return nil
}
