package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/fs/archive/archivetest"
)

// Hostile archives through a real mount: names that climb out, a zip bomb,
// overlapping zip members, a member claiming 1 TiB, truncated and corrupt
// archives. Each shows what is safe to show, says why in the log, never
// yields a wrong byte and never hangs.

// within fails the test when f takes longer than d: nothing may hang.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still running after %v", what, d)
	}
}

// zipCentral splits a zip (no zip64) into the bytes before its central
// directory and the directory's records.
func zipCentral(t *testing.T, z []byte) (head []byte, recs [][]byte) {
	t.Helper()
	eocd := bytes.LastIndex(z, []byte("PK\x05\x06"))
	if eocd < 0 {
		t.Fatal("no end record")
	}
	cd := int(binary.LittleEndian.Uint32(z[eocd+16:]))
	for p := z[cd:eocd]; len(p) > 0; {
		n := 46 + int(binary.LittleEndian.Uint16(p[28:])) + int(binary.LittleEndian.Uint16(p[30:])) + int(binary.LittleEndian.Uint16(p[32:]))
		recs = append(recs, p[:n])
		p = p[n:]
	}
	return z[:cd], recs
}

// zipJoin builds a zip from head and central directory records.
func zipJoin(head []byte, recs [][]byte) []byte {
	out := bytes.Clone(head)
	for _, r := range recs {
		out = append(out, r...)
	}
	end := make([]byte, 22)
	copy(end, "PK\x05\x06")
	binary.LittleEndian.PutUint16(end[8:], uint16(len(recs)))
	binary.LittleEndian.PutUint16(end[10:], uint16(len(recs)))
	binary.LittleEndian.PutUint32(end[12:], uint32(len(out)-len(head)))
	binary.LittleEndian.PutUint32(end[16:], uint32(len(head)))
	return append(out, end...)
}

const hostileScript = `
import io, sys, tarfile, zipfile
with zipfile.ZipFile("slip.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for n in ["../../evil.txt", "/etc/evil", "ok/../../../x", "good/ok.txt", "good/../fine.txt"]:
        z.writestr(n, "content of " + n)
with zipfile.ZipFile("bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("zeros", b"\0" * (64 << 20))
def add(t, name, data=b"", kind=tarfile.REGTYPE, link=""):
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.size = kind, link, len(data)
    t.addfile(i, io.BytesIO(data))
with tarfile.open("slip.tar", "w", format=tarfile.GNU_FORMAT) as t:
    add(t, "../evil"); add(t, "/abs/x", b"abs"); add(t, "a/../../b")
    add(t, "good/ok", b"fine"); add(t, "good/link", kind=tarfile.SYMTYPE, link="/etc/passwd")
    add(t, "good/up", kind=tarfile.SYMTYPE, link="../../../etc/passwd")
with tarfile.open("tib.tar", "w", format=tarfile.USTAR_FORMAT) as t:
    add(t, "before", b"ok"); add(t, "huge", b"tiny"); add(t, "after", b"never seen")
with zipfile.ZipFile("plain.zip", "w") as z:
    z.writestr(zipfile.ZipInfo("stored"), b"stored member " * 5000)
    z.writestr(zipfile.ZipInfo("deflated"), b"deflated member " * 5000, zipfile.ZIP_DEFLATED)
    z.writestr(zipfile.ZipInfo("other"), b"an intact member")
`

func TestHostileArchivesThroughMount(t *testing.T) {
	archivetest.NeedTools(t, "python3", "tar", "gzip", "zip")
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "hostile.py"), []byte(hostileScript), 0o600); err != nil {
		t.Fatal(err)
	}
	archivetest.Shell(t, work, "python3 hostile.py")
	src := filepath.Join(work, "src")
	makeArchiveTree(t, src, 80)
	archivetest.Shell(t, src, "tar -cf ../whole.tar . && zip -q -r ../whole.zip .")
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(work, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	arch := map[string][]byte{"slip.zip": read("slip.zip"), "slip.tar": read("slip.tar"), "bomb.zip": read("bomb.zip")}

	// The bomb again, its header declaring 4 GiB - 2 from 64 KiB: past the ratio limit.
	head, recs := zipCentral(t, arch["bomb.zip"])
	lying := bytes.Clone(recs[0])
	binary.LittleEndian.PutUint32(lying[24:], 0xfffffffe)
	arch["lying.zip"] = zipJoin(head, [][]byte{lying})

	// Overlapping members: 300 names for one local header (golang/go#33026).
	head, recs = zipCentral(t, read("plain.zip"))
	var over [][]byte
	for i := range 300 {
		r := bytes.Clone(recs[1]) // "deflated"
		name := fmt.Sprintf("n%07d", i)
		binary.LittleEndian.PutUint16(r[28:], uint16(len(name)))
		r = append(r[:46:46], name...)
		over = append(over, r)
	}
	arch["overlap.zip"] = zipJoin(head, over)

	// A tar member claiming 1 TiB.
	tib := read("tib.tar")
	archivetest.SetTarSize(tib[1024:1536], 1<<40)
	arch["tib.tar"] = tib

	// Truncated archives.
	whole, wholeZip := read("whole.tar"), read("whole.zip")
	arch["trunc.tar"] = whole[:len(whole)*6/10]
	arch["trunc.tar.gz"] = gzipped(t, work, whole)[:len(gzipped(t, work, whole))*6/10]
	arch["trunc.zip"] = wholeZip[:len(wholeZip)/2]

	// Corrupt member data: one byte flipped in a stored and in a deflated member.
	plain := read("plain.zip")
	corrupt := bytes.Clone(plain)
	if i := bytes.Index(corrupt, []byte("stored member stored")); i < 0 {
		t.Fatal("stored member not found")
	} else {
		corrupt[i+30000] ^= 0x20
	}
	head, recs = zipCentral(t, plain)
	defl := int(binary.LittleEndian.Uint32(recs[1][42:])) // local header of "deflated"
	corrupt[defl+30+8+40] ^= 0xff
	arch["corrupt.zip"] = corrupt

	m := mountArchives(t, arch, t.TempDir(), nil)
	at := func(p string) string { return filepath.Join(m.dir, p) }

	within(t, time.Minute, "hostile listings", func() {
		archivetest.EqualNames(t, "slip.zip", archivetest.WalkNames(t, at("slip.zip")), []string{"etc", "etc/evil", "fine.txt", "good", "good/ok.txt"})
		archivetest.EqualNames(t, "slip.tar", archivetest.WalkNames(t, at("slip.tar")), []string{"abs", "abs/x", "good", "good/ok"})
		archivetest.EqualNames(t, "overlap.zip", archivetest.WalkNames(t, at("overlap.zip")), nil)
		archivetest.EqualNames(t, "lying.zip", archivetest.WalkNames(t, at("lying.zip")), nil)
		archivetest.EqualNames(t, "tib.tar", archivetest.WalkNames(t, at("tib.tar")), []string{"before"})
	})
	if b, err := os.ReadFile(at("slip.zip/etc/evil")); err != nil || string(b) != "content of /etc/evil" {
		t.Errorf("slip.zip/etc/evil: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(m.dir), "evil.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("evil.txt beside the mount: %v", err)
	}

	// The bomb reads as its 64 MiB of zeros, in bounded memory.
	within(t, 2*time.Minute, "reading the zip bomb", func() {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f, err := os.Open(at("bomb.zip/zeros"))
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		var total int64
		peak := uint64(0)
		for {
			n, err := f.Read(buf)
			if bytes.IndexFunc(buf[:n], func(r rune) bool { return r != 0 }) >= 0 {
				t.Errorf("a non-zero byte near %d", total)
				return
			}
			total += int64(n)
			if total%(8<<20) == 0 {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
			if err != nil || n == 0 {
				break
			}
		}
		if total != 64<<20 {
			t.Errorf("bomb: read %d bytes, want %d", total, 64<<20)
		}
		if grew := int64(peak) - int64(before.HeapInuse); grew > 32<<20 {
			t.Errorf("heap grew by %d MiB while reading the bomb", grew>>20)
		}
	})

	// Truncated: what could be read is listed, and every listed file
	// reads right or fails with EIO; never a wrong byte.
	for _, n := range []string{"trunc.tar", "trunc.tar.gz"} {
		within(t, time.Minute, n, func() {
			names := archivetest.WalkNames(t, at(n))
			good, bad := 0, 0
			for _, name := range names {
				p := at(n + "/" + name)
				if fi, err := os.Stat(p); err != nil || fi.IsDir() {
					continue
				}
				got, err := readErrno(p)
				switch {
				case err == nil:
					want, rerr := os.ReadFile(filepath.Join(src, name))
					if rerr != nil || !bytes.Equal(got, want) {
						t.Errorf("%s/%s: %d bytes that are not the member's", n, name, len(got))
					}
					good++
				case errors.Is(err, syscall.EIO):
					bad++
				default:
					t.Errorf("%s/%s: %v, want the bytes or EIO", n, name, err)
				}
			}
			if good < 20 {
				t.Errorf("%s: %d members readable, want the first part of the archive (%d names)", n, good, len(names))
			}
			t.Logf("%s: %d names listed, %d members read right, %d EIO", n, len(names), good, bad)
		})
	}
	if _, err := os.ReadDir(at("trunc.zip")); !errors.Is(err, syscall.EIO) {
		t.Errorf("trunc.zip (no central directory): readdir %v, want EIO", err)
	}

	// Corrupt member data: EIO, the intact member reads right.
	for _, n := range []string{"corrupt.zip/stored", "corrupt.zip/deflated"} {
		if b, err := readErrno(at(n)); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s: %d bytes, %v; want EIO", n, len(b), err)
		}
	}
	if b, err := os.ReadFile(at("corrupt.zip/other")); err != nil || string(b) != "an intact member" {
		t.Errorf("corrupt.zip/other: %q, %v", b, err)
	}

	log := m.log.String()
	for _, want := range []string{
		"archive=slip.zip", "unsafe member name", "archive=overlap.zip", "zip members overlap",
		"archive=lying.zip", "archive limit exceeded", "archive=tib.tar", "archive=trunc.tar",
		"archive trunc.zip: zip: malformed archive", "checksum mismatch", "symlinks that lead out of the archive are not shown",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	t.Logf("log:\n%s", log)
}

// gzipped compresses b with gzip(1).
func gzipped(t *testing.T, work string, b []byte) []byte {
	t.Helper()
	p := filepath.Join(work, "gz.in")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	archivetest.Shell(t, work, "gzip -c gz.in > gz.out")
	out, err := os.ReadFile(filepath.Join(work, "gz.out"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}
