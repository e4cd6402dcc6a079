package archive

import (
	"archive/zip"
	"bytes"
	"io"
	"strings"
	"testing"
)

// fuzzSeeds are small valid archives of every feature the openers decode.
func zipSeeds(t testing.TB) [][]byte {
	return [][]byte{
		makeZip(t, []zipMember{{name: "a.txt", data: []byte("hello hello hello"), method: zip.Deflate}, {name: "d/", data: nil}, {name: "d/b", data: []byte("stored")}}),
		makeZip(t, []zipMember{{name: "link", data: []byte("a.txt"), mode: 0o120777}, {name: "../x", data: []byte("x")}}),
		makeZip(t, nil),
	}
}

func tarSeeds(t testing.TB) [][]byte {
	long := strings.Repeat("long/", 40) + "name"
	return [][]byte{
		makeTar(t, []tarMember{{name: "a.txt", data: []byte("hello")}, {name: "d/", typ: '5'}, {name: "d/l", typ: '2', link: "../a.txt"}, {name: "h", typ: '1', link: "a.txt"}}),
		makeTar(t, []tarMember{{name: long, data: []byte("long name")}, {name: "/abs", data: []byte("x")}}),
	}
}

// checkArchive exercises a listed archive: every name is safe, every read
// stays within its member's size, and the index survives a round trip.
func checkArchive(t *testing.T, a *Archive, r io.ReaderAt, size int64) {
	checkSafeListing(t, a)
	for _, e := range a.Entries() {
		if e.Mode.Type() != 0 {
			continue
		}
		m, err := a.Open(e.Name)
		if err != nil {
			continue
		}
		if e.Size > 16<<20 {
			m.Close()
			continue
		}
		buf := make([]byte, e.Size+1)
		n, _ := m.ReadAt(buf, 0)
		if int64(n) > e.Size {
			t.Fatalf("%q: read %d bytes of a %d-byte member", e.Name, n, e.Size)
		}
		m.Close()
	}
	blob, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadIndex(r, size, blob, Limits{})
	if err != nil {
		t.Fatalf("reloading our own index: %v", err)
	}
	if got, want := strings.Join(listedNames(b), "\n"), strings.Join(listedNames(a), "\n"); got != want {
		t.Fatalf("reloaded listing differs")
	}
}

func FuzzOpenZip(f *testing.F) {
	for _, s := range zipSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, z []byte) {
		r := bytes.NewReader(z)
		a, err := OpenZip(r, int64(len(z)), Limits{MaxEntries: 1000})
		if err != nil {
			return
		}
		checkArchive(t, a, r, int64(len(z)))
	})
}

func FuzzOpenTar(f *testing.F) {
	for _, s := range tarSeeds(f) {
		f.Add(s)
		f.Add(gzipBytes(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		if a, err := OpenTar(r, int64(len(b)), Limits{MaxEntries: 1000}); err == nil {
			checkArchive(t, a, r, int64(len(b)))
		}
		g := IndexTarGz(t.Context(), r, int64(len(b)), Limits{MaxEntries: 1000, CheckpointSpan: 1024, MaxCheckpoints: 8})
		<-g.Done()
		checkArchive(t, g, r, int64(len(b)))
	})
}

// FuzzLoadIndex feeds damaged indexes to LoadIndex: an error, never a
// panic or an unsafe listing.
func FuzzLoadIndex(f *testing.F) {
	for _, s := range tarSeeds(f) {
		a, err := OpenTar(bytes.NewReader(s), int64(len(s)), Limits{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(must(a.MarshalBinary()), int64(len(s)))
	}
	f.Fuzz(func(t *testing.T, idx []byte, size int64) {
		a, err := LoadIndex(bytes.NewReader(nil), size, idx, Limits{MaxEntries: 1000})
		if err == nil {
			checkSafeListing(t, a)
		}
	})
}
