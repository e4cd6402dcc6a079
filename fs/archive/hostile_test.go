package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"rangefs/fs/archive/archivetest"
)

// checkSafeListing fails on any entry name that could leave the archive.
func checkSafeListing(t *testing.T, a *Archive) {
	t.Helper()
	for _, e := range a.Entries() {
		if e.Name == "" || strings.HasPrefix(e.Name, "/") || strings.IndexByte(e.Name, 0) >= 0 ||
			e.Name == ".." || strings.HasPrefix(e.Name, "../") || strings.Contains(e.Name, "/../") || strings.HasSuffix(e.Name, "/..") {
			t.Errorf("unsafe name listed: %q", e.Name)
		}
	}
}

type zipMember struct {
	name   string
	data   []byte
	method uint16
	mode   uint32 // unix mode with type bits, 0 for default
}

func makeZip(t testing.TB, members []zipMember) []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for _, m := range members {
		h := &zip.FileHeader{Name: m.name, Method: m.method}
		if m.mode != 0 {
			h.CreatorVersion = 3 << 8
			h.ExternalAttrs = m.mode << 16
		}
		fw, err := w.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(m.data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type tarMember struct {
	name, link string
	typ        byte
	data       []byte
}

func makeTar(t testing.TB, members []tarMember) []byte {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, m := range members {
		h := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.typ, Size: int64(len(m.data)), Mode: 0o644, Format: tar.FormatPAX}
		if m.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		w.Write(m.data)
	}
	w.Close()
	return b.Bytes()
}

func TestZipSlipNames(t *testing.T) {
	z := makeZip(t, []zipMember{
		{name: "../../evil.txt", data: []byte("x")},
		{name: "a/../../evil2.txt", data: []byte("x")},
		{name: "/etc/passwd", data: []byte("root")},
		{name: "ok/../fine.txt", data: []byte("fine")},
		{name: "nul\x00name", data: []byte("x")},
		{name: "ok/abs-link", data: []byte("/etc/shadow"), mode: 0o120777},
		{name: "ok/up-link", data: []byte("../../../../etc/shadow"), mode: 0o120777},
	})
	a, err := OpenZip(bytes.NewReader(z), int64(len(z)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkSafeListing(t, a)
	if err := a.Err(); !errors.Is(err, ErrUnsafeName) {
		t.Fatalf("Err = %v, want ErrUnsafeName", err)
	}
	t.Logf("Err: %v", a.Err())
	archivetest.EqualNames(t, "listing", listedNames(a), []string{"etc/passwd", "fine.txt", "ok/abs-link", "ok/up-link"})
	for _, n := range []string{"ok/abs-link", "ok/up-link"} {
		e, _ := a.Lookup(n)
		target, err := a.Readlink(n)
		if err != nil || e.Mode.Type() != fsModeSymlink || !linkEscapes(n, target) {
			t.Errorf("%s: %+v, target %q, %v", n, e, target, err)
		}
	}
	if got := readAll(t, a, "etc/passwd", 10); string(got) != "root" {
		t.Errorf("etc/passwd = %q", got)
	}
}

func TestTarSlipNames(t *testing.T) {
	tb := makeTar(t, []tarMember{
		{name: "../../evil.txt", data: []byte("x")},
		{name: "/abs/file", data: []byte("abs")},
		{name: "d/link", typ: tar.TypeSymlink, link: "/etc/shadow"},
		{name: "d/hard", typ: tar.TypeLink, link: "../../etc/shadow"},
		{name: "d/dup", data: []byte("first")},
		{name: "d/dup", data: []byte("second, later wins")},
	})
	a, err := OpenTar(bytes.NewReader(tb), int64(len(tb)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkSafeListing(t, a)
	if err := a.Err(); !errors.Is(err, ErrUnsafeName) {
		t.Fatalf("Err = %v, want ErrUnsafeName", err)
	}
	archivetest.EqualNames(t, "listing", listedNames(a), []string{"abs/file", "d/dup", "d/link"})
	if e, _ := a.Lookup("d/link"); !e.LinkEscapes || e.Linkname != "/etc/shadow" {
		t.Errorf("d/link: %+v", e)
	}
	if got := readAll(t, a, "d/dup", 7); string(got) != "second, later wins" {
		t.Errorf("d/dup = %q", got)
	}
}

// TestZipOverlapBomb duplicates one member's central directory record many
// times (the overlapping zip bomb) and overlaps a second pair partially.
func TestZipOverlapBomb(t *testing.T) {
	z := makeZip(t, []zipMember{
		{name: "kernel", data: bytes.Repeat([]byte{0}, 1<<20), method: zip.Deflate},
		{name: "second", data: []byte("second member"), method: zip.Store},
		{name: "third", data: []byte("third member"), method: zip.Store},
	})
	z = rewriteCentralDirectory(t, z, func(recs [][]byte) [][]byte {
		out := [][]byte{recs[1]}
		for i := range 1000 { // 1000 names for the same kernel
			r := bytes.Clone(recs[0])
			copy(r[centralLen:], []byte{byte('a' + i%26), byte('a' + i/26%26), byte('a' + i/676)})
			out = append(out, r)
		}
		// "third" claims to start inside "second"'s data.
		r := bytes.Clone(recs[2])
		binary.LittleEndian.PutUint32(r[42:], binary.LittleEndian.Uint32(recs[1][42:])+localLen+6+4)
		return append(out, r)
	})
	a, err := OpenZip(bytes.NewReader(z), int64(len(z)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Err(); !errors.Is(err, ErrOverlap) {
		t.Fatalf("Err = %v, want ErrOverlap", err)
	}
	if n := a.Len(); n != 0 {
		t.Fatalf("%d entries listed from overlapping records: %q", n, listedNames(a))
	}
	t.Logf("Err: %.300v", a.Err())
}

// rewriteCentralDirectory replaces a zip's central directory records.
func rewriteCentralDirectory(t testing.TB, z []byte, edit func([][]byte) [][]byte) []byte {
	eocd := bytes.LastIndex(z, []byte("PK\x05\x06"))
	cdOff := int(binary.LittleEndian.Uint32(z[eocd+16:]))
	var recs [][]byte
	for p := z[cdOff:eocd]; len(p) > 0; {
		n := centralLen + int(le16(p[28:])) + int(le16(p[30:])) + int(le16(p[32:]))
		recs = append(recs, p[:n])
		p = p[n:]
	}
	recs = edit(recs)
	out := bytes.Clone(z[:cdOff])
	for _, r := range recs {
		out = append(out, r...)
	}
	end := bytes.Clone(z[eocd : eocd+eocdLen])
	binary.LittleEndian.PutUint16(end[8:], uint16(len(recs)))
	binary.LittleEndian.PutUint16(end[10:], uint16(len(recs)))
	binary.LittleEndian.PutUint32(end[12:], uint32(len(out)-cdOff))
	return append(out, end...)
}

// TestZipBombRatio: 64 MiB of zeros in about 64 KiB reads with bounded
// memory and stops at its declared size; a lower ratio limit refuses it,
// and a header claiming 1 TiB from it is refused by the default limit.
func TestZipBombRatio(t *testing.T) {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	fw, _ := w.Create("zeros")
	chunk := make([]byte, 1<<20)
	for range 64 {
		fw.Write(chunk)
	}
	w.Close()
	z := b.Bytes()
	a, err := OpenZip(bytes.NewReader(z), int64(len(z)), Limits{})
	if err != nil || a.Err() != nil {
		t.Fatal(err, a.Err())
	}
	r, err := a.Open("zeros")
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	peak := uint64(0)
	buf := make([]byte, 1<<20)
	var total int64
	for off := int64(0); ; {
		n, err := r.ReadAt(buf, off)
		total += int64(n)
		off += int64(n)
		if off%(8<<20) == 0 {
			runtime.ReadMemStats(&after)
			peak = max(peak, after.HeapInuse)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	if total != 64<<20 {
		t.Fatalf("read %d bytes, declared %d", total, 64<<20)
	}
	if grew := int64(peak) - int64(before.HeapInuse); grew > 16<<20 {
		t.Errorf("heap grew by %d bytes while inflating", grew)
	}
	t.Logf("%d compressed bytes, heap in use before %d, peak %d", len(z), before.HeapInuse, peak)

	a, err = OpenZip(bytes.NewReader(z), int64(len(z)), Limits{MaxRatio: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(a.Err(), ErrLimit) || a.Len() != 0 {
		t.Fatalf("MaxRatio 100: Err = %v, %d entries", a.Err(), a.Len())
	}
	// The same stream declaring 1 TiB (zip64 would be needed; the 32-bit
	// field says 4 GiB - 1 and is already past the ratio).
	lying := rewriteCentralDirectory(t, z, func(recs [][]byte) [][]byte {
		binary.LittleEndian.PutUint32(recs[0][24:], 0xfffffffe)
		return recs
	})
	a, err = OpenZip(bytes.NewReader(lying), int64(len(lying)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(a.Err(), ErrLimit) || a.Len() != 0 {
		t.Fatalf("lying size: Err = %v, %d entries", a.Err(), a.Len())
	}
}

// TestMemberClaimingOneTiB: a stored zip member and a tar member each
// claim 1 TiB in a small archive.
func TestMemberClaimingOneTiB(t *testing.T) {
	z := makeZip(t, []zipMember{{name: "before", data: []byte("ok")}, {name: "huge", data: []byte("tiny")}})
	z = rewriteCentralDirectory(t, z, func(recs [][]byte) [][]byte {
		r := recs[1]
		// Sizes and offset go to a zip64 extra field.
		binary.LittleEndian.PutUint32(r[20:], 0xffffffff)
		binary.LittleEndian.PutUint32(r[24:], 0xffffffff)
		extra := make([]byte, 4+16)
		binary.LittleEndian.PutUint16(extra, 1)
		binary.LittleEndian.PutUint16(extra[2:], 16)
		binary.LittleEndian.PutUint64(extra[4:], 1<<40)
		binary.LittleEndian.PutUint64(extra[12:], 1<<40)
		binary.LittleEndian.PutUint16(r[30:], uint16(len(extra)+int(le16(r[30:]))))
		nl := int(le16(r[28:]))
		r = append(append(bytes.Clone(r[:centralLen+nl]), extra...), r[centralLen+nl:]...)
		recs[1] = r
		return recs
	})
	a, err := OpenZip(bytes.NewReader(z), int64(len(z)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(a.Err(), ErrFormat) {
		t.Fatalf("zip: Err = %v", a.Err())
	}
	archivetest.EqualNames(t, "zip listing", listedNames(a), []string{"before"})
	t.Logf("zip: %v", a.Err())

	tb := makeTar(t, []tarMember{{name: "before", data: []byte("ok")}, {name: "huge", data: []byte("tiny")}})
	// Rewrite the second header's size field to 1 TiB (base-256) and fix its checksum.
	hdr := tb[1024 : 1024+512]
	if string(hdr[:4]) != "huge" {
		// pax writer may add an extended header; find the real one.
		i := bytes.Index(tb[512:], []byte("huge\x00"))
		hdr = tb[512+i-(512+i)%512:]
		hdr = hdr[:512]
	}
	archivetest.SetTarSize(hdr, 1<<40)
	a, err = OpenTar(bytes.NewReader(tb), int64(len(tb)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(a.Err(), ErrFormat) {
		t.Fatalf("tar: Err = %v", a.Err())
	}
	archivetest.EqualNames(t, "tar listing", listedNames(a), []string{"before"})
	t.Logf("tar: %v", a.Err())

	// The same tar gzipped: the pass lists what came before and stops.
	gz := gzipBytes(tb)
	g := IndexTarGz(context.Background(), bytes.NewReader(gz), int64(len(gz)), Limits{})
	waitDone(t, g)
	if !errors.Is(g.Err(), ErrFormat) {
		t.Fatalf("tar.gz: Err = %v", g.Err())
	}
	archivetest.EqualNames(t, "tar.gz listing", listedNames(g), []string{"before"})
}

func gzipBytes(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// TestTruncatedArchives cuts real archives at many points: no panic, no
// hang, what is listed is readable and right, or an error says why.
func TestTruncatedArchives(t *testing.T) {
	var members []zipMember
	var tmembers []tarMember
	for i := range 40 {
		data := bytes.Repeat([]byte{byte(i)}, 3000+i*100)
		name := strings.Repeat("d/", i%3) + "m" + string(rune('a'+i%26)) + strconv.FormatInt(int64(i), 8)
		members = append(members, zipMember{name: name, data: data, method: uint16(i % 2 * 8)})
		tmembers = append(tmembers, tarMember{name: name, data: data})
	}
	z := makeZip(t, members)
	tb := makeTar(t, tmembers)
	gz := gzipBytes(tb)
	want := map[string][]byte{}
	for _, m := range members {
		want[m.name] = m.data
	}
	check := func(kind string, a *Archive, cut int) {
		for _, e := range a.Entries() {
			if e.Mode.Type() != 0 {
				continue
			}
			r, err := a.Open(e.Name)
			if err != nil {
				continue
			}
			got := make([]byte, e.Size+10)
			n, err := r.ReadAt(got, 0)
			r.Close()
			if err != nil && err != io.EOF {
				continue // an error is fine; wrong bytes are not
			}
			if !bytes.Equal(got[:n], want[e.Name]) {
				t.Fatalf("%s cut at %d: %q read %d wrong bytes", kind, cut, e.Name, n)
			}
		}
	}
	for cut := 0; cut < len(z); cut += 457 {
		a, err := OpenZip(bytes.NewReader(z[:cut]), int64(cut), Limits{})
		if err == nil {
			check("zip", a, cut)
		} else if !errors.Is(err, ErrFormat) {
			t.Fatalf("zip cut at %d: %v, want ErrFormat", cut, err)
		}
	}
	for cut := 0; cut < len(tb); cut += 389 {
		a, err := OpenTar(bytes.NewReader(tb[:cut]), int64(cut), Limits{})
		if err != nil {
			if a != nil || !errors.Is(err, ErrFormat) {
				t.Fatalf("tar cut at %d: %v, %v", cut, a, err)
			}
			continue
		}
		if cut < len(tb)-1024 && a.Err() == nil {
			t.Fatalf("tar cut at %d of %d: no error", cut, len(tb))
		}
		check("tar", a, cut)
	}
	for cut := 0; cut < len(gz); cut += 211 {
		a := IndexTarGz(context.Background(), bytes.NewReader(gz[:cut]), int64(cut), Limits{CheckpointSpan: 16 << 10})
		waitDone(t, a)
		if a.Err() == nil {
			t.Fatalf("tar.gz cut at %d of %d: no error", cut, len(gz))
		}
		check("tar.gz", a, cut)
	}
}

// TestTarPaxHeaderOfOneGiB: a pax header claiming 1 GiB is refused after at
// most about 1 MiB is read, whether the bytes are there or not.
func TestTarPaxHeaderOfOneGiB(t *testing.T) {
	good := makeTar(t, []tarMember{{name: "first", data: []byte("first")}})
	good = good[:len(good)-1024] // drop the end blocks
	pax := make([]byte, 512)
	copy(pax, "PaxHeaders/huge")
	copy(pax[100:], "0000644\x00")
	copy(pax[156:], "x")
	copy(pax[257:], "ustar\x0000")
	archivetest.SetTarSize(pax, 1<<30)
	body := bytes.Repeat([]byte("9 a=bcd\n"), (3<<20)/8) // 3 MiB of records, then the archive ends
	tb := append(append(bytes.Clone(good), pax...), body...)
	cr := &countingReaderAt{r: bytes.NewReader(tb)}
	start := time.Now()
	a, err := OpenTar(cr, int64(len(tb)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(a.Err(), ErrFormat) {
		t.Fatalf("Err = %v", a.Err())
	}
	archivetest.EqualNames(t, "listing", listedNames(a), []string{"first"})
	if n := cr.bytes.Load(); n > 2<<20 {
		t.Errorf("read %d bytes for a refused pax header", n)
	}
	t.Logf("Err: %v (read %d bytes in %v)", a.Err(), cr.bytes.Load(), time.Since(start))
}

// TestCorruptMemberData: flipped bytes in member data give an error, never
// the wrong bytes without one.
func TestCorruptMemberData(t *testing.T) {
	text := bigContent(newRand(3), 200<<10, false)
	z := makeZip(t, []zipMember{{name: "deflated", data: text, method: zip.Deflate}, {name: "stored", data: text, method: zip.Store}})
	a, err := OpenZip(bytes.NewReader(z), int64(len(z)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"deflated", "stored"} {
		r, _ := a.Open(name) // resolves the data offset
		r.Close()
		e, _ := a.Lookup(name)
		off := e.data.dataOff
		for _, at := range []int64{off + 100, off + 5000, off + 20000} {
			bad := bytes.Clone(z)
			bad[at] ^= 0x10
			b, err := OpenZip(bytes.NewReader(bad), int64(len(bad)), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAllErr(b, name)
			if err == nil {
				t.Fatalf("%s with a flipped byte at %d: read %d bytes, equal %v, no error", name, at, len(got), bytes.Equal(got, text))
			}
			if !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrFormat) {
				t.Fatalf("%s: %v, want ErrChecksum or ErrFormat", name, err)
			}
		}
	}
}

func readAllErr(a *Archive, name string) ([]byte, error) {
	r, err := a.Open(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []byte
	buf := make([]byte, 8192)
	for off := int64(0); ; {
		n, err := r.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// TestZipFileOverDirectoryKeepsTheRest: a zip member that cannot replace
// a directory holding members (e/f.txt, then a file e) is left out with a
// problem that says so; the members after it are listed, and no entry
// limit is claimed.
func TestZipFileOverDirectoryKeepsTheRest(t *testing.T) {
	members := []zipMember{{name: "e/f.txt", data: []byte("f")}, {name: "e", data: []byte("file e")}}
	want := []string{"e/f.txt"} // e is the implicit directory
	for i := range 5 {
		n := "after" + strconv.Itoa(i) + ".txt"
		members = append(members, zipMember{name: n, data: []byte(n)})
		want = append(want, n)
	}
	z := makeZip(t, members)
	a, err := OpenZip(bytes.NewReader(z), int64(len(z)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	archivetest.EqualNames(t, "zip listing", listedNames(a), want)
	if err := a.Err(); !errors.Is(err, ErrFormat) || errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "cannot replace a directory") {
		t.Errorf("Err = %v, want the directory clash and no entry limit", err)
	}
}
