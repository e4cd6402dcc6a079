package archive

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

// storedGzip gzips b without compression, so a byte of b can be found,
// and changed, in the result.
func storedGzip(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := gzip.NewWriterLevel(&out, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// TestTarGzChecksumMismatchIsNotServed: a byte changed inside a tar.gz's
// compressed data still inflates; only the gzip member's CRC-32, checked at
// its end, tells. Every tar member whose header or bytes lie in that gzip
// member is then left out of the listing and fails to open with
// ErrChecksum, and a Reader opened before fails its next read; members of
// an earlier, intact gzip member stay.
func TestTarGzChecksumMismatchIsNotServed(t *testing.T) {
	sizes := map[byte]int{'a': 100 << 10, 'b': 300 << 10, 'c': 300 << 10}
	fill := func(c byte) []byte { return bytes.Repeat([]byte{c}, sizes[c]) }
	tb := makeTar(t, []tarMember{{name: "a", data: fill('a')}, {name: "b", data: fill('b')}, {name: "c", data: fill('c')}})
	// The second gzip member starts at b's header.
	split := bytes.Index(tb, append([]byte("b"), 0))
	if split < 0 || split%512 != 0 {
		t.Fatalf("b's header is at %d", split)
	}
	for _, tc := range []struct {
		name string
		gz   []byte
		kept []string
	}{
		{"one gzip member", storedGzip(t, tb), nil},
		{"two gzip members", append(storedGzip(t, tb[:split]), storedGzip(t, tb[split:])...), []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gz := slices.Clone(tc.gz)
			i := bytes.Index(gz, fill('b')[:1000])
			if i < 0 {
				t.Fatal("b's bytes are not in the gzip data")
			}
			gz[i+10] ^= 0x20
			// The pass is held past its first 256 KiB, which list a, so a is
			// opened and read before the pass reaches the bad trailer.
			g := &gatedReaderAt{r: bytes.NewReader(gz), limit: 256 << 10, open: make(chan struct{})}
			defer g.once.Do(func() { close(g.open) })
			a := IndexTarGz(context.Background(), g, int64(len(gz)), Limits{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, ok, err := a.WaitLookup(ctx, "a"); !ok || err != nil {
				t.Fatalf("a is not listed during the pass: %v, %v", ok, err)
			}
			early, err := a.Open("a")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := early.ReadAt(make([]byte, 10), 0); err != nil {
				t.Fatalf("reading a during the pass: %v", err)
			}
			g.once.Do(func() { close(g.open) })
			waitDone(t, a)
			if !errors.Is(a.Err(), ErrChecksum) {
				t.Fatalf("Err = %v, want ErrChecksum", a.Err())
			}
			var files []string
			for _, e := range a.Entries() {
				if e.Mode.Type() == 0 {
					files = append(files, e.Name)
				}
			}
			if !slices.Equal(files, tc.kept) {
				t.Errorf("listed files %q, want %q", files, tc.kept)
			}
			for _, m := range []string{"a", "b", "c"} {
				_, listed := a.Lookup(m)
				r, oerr := a.Open(m)
				if slices.Contains(tc.kept, m) {
					if oerr != nil {
						t.Errorf("open %s: %v", m, oerr)
						continue
					}
					got, rerr := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
					if rerr != nil || !bytes.Equal(got, fill(m[0])) {
						t.Errorf("%s: %d bytes, %v", m, len(got), rerr)
					}
					continue
				}
				if listed {
					t.Errorf("%s, in the damaged gzip member, is listed", m)
				}
				if !errors.Is(oerr, ErrChecksum) {
					t.Errorf("open %s: %v, want ErrChecksum", m, oerr)
				}
			}
			_, rerr := early.ReadAt(make([]byte, 10), 0)
			if slices.Contains(tc.kept, "a") && rerr != nil {
				t.Errorf("a Reader of a, which is intact, read with %v after the pass", rerr)
			}
			if !slices.Contains(tc.kept, "a") && !errors.Is(rerr, ErrChecksum) {
				t.Errorf("a Reader of a opened during the pass read with %v after the mismatch, want ErrChecksum", rerr)
			}
		})
	}
}

// A hard link's name and target come from its own header: one read from
// the gzip member that failed its CRC is left out, though it copies the
// placement of a target in an intact member.
func TestTarGzHardLinkInDamagedMemberIsNotServed(t *testing.T) {
	aData := bytes.Repeat([]byte{'a'}, 1000)
	bData := bytes.Repeat([]byte{'b'}, 300<<10)
	tb := makeTar(t, []tarMember{{name: "a", data: aData}, {name: "b", data: bData}, {name: "h", link: "a", typ: '1'}})
	split := bytes.Index(tb, append([]byte("b"), 0))
	gz := append(storedGzip(t, tb[:split]), storedGzip(t, tb[split:])...)
	i := bytes.Index(gz, bData[:1000])
	gz[i+10] ^= 0x20
	a := IndexTarGz(context.Background(), bytes.NewReader(gz), int64(len(gz)), Limits{})
	waitDone(t, a)
	if !errors.Is(a.Err(), ErrChecksum) {
		t.Fatalf("Err = %v, want ErrChecksum", a.Err())
	}
	if _, ok := a.Lookup("a"); !ok {
		t.Error("a, in the intact gzip member, is not listed")
	}
	if _, ok := a.Lookup("h"); ok {
		t.Error("h, whose header is in the gzip member that failed its CRC, is listed")
	}
}

// Bytes after the last gzip member that are not a gzip member (gzip(1)
// ignores them as trailing garbage) are reported, and hide nothing of the
// member before them, which passed its CRC.
func TestTarGzTrailingGarbageHidesNothing(t *testing.T) {
	tb := makeTar(t, []tarMember{{name: "a", data: []byte("hello\n")}})
	for _, extra := range []string{"\x1f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "\x1f\x8b\x09\x00\x00\x00\x00\x00\x00\x03junk"} {
		gz := append(storedGzip(t, tb), extra...)
		a := IndexTarGz(context.Background(), bytes.NewReader(gz), int64(len(gz)), Limits{})
		waitDone(t, a)
		if a.Err() == nil {
			t.Errorf("trailing %q: no error", extra)
		}
		if _, ok := a.Lookup("a"); !ok {
			t.Errorf("trailing %q: a, in the one gzip member (CRC ok), is hidden; Err: %v", extra, a.Err())
		}
	}
}
