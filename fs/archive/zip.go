package archive

import (
	"bufio"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"time"
)

// Zip record signatures and sizes (APPNOTE.TXT 4.3).
const (
	sigLocal        = 0x04034b50
	sigCentral      = 0x02014b50
	sigEOCD         = 0x06054b50
	sigZip64Locator = 0x07064b50
	sigZip64EOCD    = 0x06064b50

	localLen        = 30
	centralLen      = 46
	eocdLen         = 22
	zip64LocatorLen = 20
	zip64EOCDLen    = 56
	maxCommentLen   = 0xffff

	// tailLen covers the end record with the longest comment and, before
	// it, the zip64 locator and a zip64 end record: one read finds them all.
	tailLen = maxCommentLen + eocdLen + zip64LocatorLen + zip64EOCDLen

	flagEncrypted = 0x1
)

// OpenZip lists a zip archive of the given size. It reads the tail of the
// archive once (the last 64 KiB and a little), then the central directory
// once when the tail did not already hold it: two reads for any zip, zip64
// included. Members are not touched until opened.
//
// Members with unsafe names, impossible sizes or offsets, a declared size
// beyond Limits.MaxRatio, or bytes claimed by another member are left out
// and reported by Err. A missing or malformed end record or central
// directory is an error: a zip cannot be listed without them.
func OpenZip(r io.ReaderAt, size int64, lim Limits) (*Archive, error) {
	a := newArchive(r, size, Zip, lim)
	if err := a.listZip(); err != nil {
		return nil, fmt.Errorf("zip: %w", err)
	}
	a.progress.Store(size)
	a.finish(nil)
	return a, nil
}

// zipDir is what the end records say about the central directory.
type zipDir struct {
	count     uint64
	size, off int64
	end       int64 // where the directory must end (the first end record)
	base      int64 // bytes prepended before the zip (self-extractors)
	tail      []byte
	tailOff   int64
}

func (a *Archive) listZip() error {
	d, err := a.findZipDirectory()
	if err != nil {
		return err
	}
	if d.count > uint64(a.lim.MaxEntries) {
		return fmt.Errorf("%w: %d members, the limit is %d", ErrLimit, d.count, a.lim.MaxEntries)
	}
	if d.size > a.lim.MaxDirectoryBytes {
		return fmt.Errorf("%w: central directory of %d bytes, the limit is %d", ErrLimit, d.size, a.lim.MaxDirectoryBytes)
	}
	if d.count*centralLen > uint64(d.size) {
		return fmt.Errorf("%w: %d members cannot fit a central directory of %d bytes", ErrFormat, d.count, d.size)
	}
	cd, err := a.readCentralDirectory(d)
	if err != nil {
		return err
	}
	return a.parseCentralDirectory(cd, d)
}

// findZipDirectory reads the tail and decodes the end records.
func (a *Archive) findZipDirectory() (*zipDir, error) {
	if a.size < eocdLen {
		return nil, fmt.Errorf("%w: %d bytes is too short for a zip", ErrFormat, a.size)
	}
	n := min(a.size, tailLen)
	tail := make([]byte, n)
	if err := readFullAt(a.r, tail, a.size-n); err != nil {
		return nil, err
	}
	d := &zipDir{tail: tail, tailOff: a.size - n}
	eocd := findEOCD(tail)
	if eocd < 0 {
		return nil, fmt.Errorf("%w: no end of central directory record (not a zip, or truncated)", ErrFormat)
	}
	e := tail[eocd:]
	disk, cdDisk := le16(e[4:]), le16(e[6:])
	d.count = uint64(le16(e[10:]))
	d.size = int64(le32(e[12:]))
	d.off = int64(le32(e[16:]))
	d.end = d.tailOff + int64(eocd)

	// A zip64 locator sits right before the end record.
	if loc := eocd - zip64LocatorLen; loc >= 0 && le32(tail[loc:]) == sigZip64Locator {
		z := tail[loc:]
		recOff := int64(le64(z[8:]))
		rec, recOff, err := a.zip64Record(d, recOff, d.tailOff+int64(loc))
		if err != nil {
			return nil, err
		}
		disk, cdDisk = uint16(min(le32(rec[16:]), 0xffff)), uint16(min(le32(rec[20:]), 0xffff))
		d.count = le64(rec[32:])
		d.size = int64(le64(rec[40:]))
		d.off = int64(le64(rec[48:]))
		d.end = recOff
	}
	if disk != 0 || cdDisk != 0 {
		return nil, fmt.Errorf("%w: a multi-volume zip", ErrUnsupported)
	}
	if d.size < 0 || d.off < 0 || d.size > d.end || d.off > d.end-d.size {
		return nil, fmt.Errorf("%w: central directory [%d, +%d) does not fit before its end record at %d", ErrFormat, d.off, d.size, d.end)
	}
	// Bytes before the zip (a self-extractor stub) shift every offset.
	d.base = d.end - d.size - d.off
	return d, nil
}

// zip64Record returns the 56 fixed bytes of the zip64 end record at off,
// from the tail when it is there.
func (a *Archive) zip64Record(d *zipDir, off, locator int64) ([]byte, int64, error) {
	if off < 0 || off > locator-zip64EOCDLen {
		// Some writers record it relative to prepended data: it sits just
		// before the locator when there is no extensible data.
		off = locator - zip64EOCDLen
	}
	if off < 0 {
		return nil, 0, fmt.Errorf("%w: zip64 end record offset out of range", ErrFormat)
	}
	var rec []byte
	if off >= d.tailOff {
		rec = d.tail[off-d.tailOff : off-d.tailOff+zip64EOCDLen]
	} else {
		rec = make([]byte, zip64EOCDLen)
		if err := readFullAt(a.r, rec, off); err != nil {
			return nil, 0, err
		}
	}
	if le32(rec) != sigZip64EOCD {
		if alt := locator - zip64EOCDLen; alt != off && alt >= d.tailOff {
			rec = d.tail[alt-d.tailOff : alt-d.tailOff+zip64EOCDLen]
			if le32(rec) == sigZip64EOCD {
				return rec, alt, nil
			}
		}
		return nil, 0, fmt.Errorf("%w: no zip64 end record where its locator points", ErrFormat)
	}
	return rec, off, nil
}

// findEOCD returns the index of the end record in tail, or -1. It prefers
// the last record whose comment reaches exactly the end of the archive,
// then the last whose comment fits.
func findEOCD(tail []byte) int {
	loose := -1
	for i := len(tail) - eocdLen; i >= 0; i-- {
		if le32(tail[i:]) != sigEOCD {
			continue
		}
		clen := int(le16(tail[i+20:]))
		switch {
		case i+eocdLen+clen == len(tail):
			return i
		case i+eocdLen+clen < len(tail) && loose < 0:
			loose = i
		}
	}
	return loose
}

// readCentralDirectory returns the directory's bytes: from the tail when
// it is there, else with one read.
func (a *Archive) readCentralDirectory(d *zipDir) ([]byte, error) {
	start := d.off + d.base
	if start >= d.tailOff {
		return d.tail[start-d.tailOff : start-d.tailOff+d.size], nil
	}
	cd := make([]byte, d.size)
	if err := readFullAt(a.r, cd, start); err != nil {
		return nil, err
	}
	return cd, nil
}

// zipRecord is one central directory record, kept until the overlap check.
type zipRecord struct {
	e      *Entry
	ok     bool // listable (name and sizes passed)
	end    int64
	nameLn int
}

func (a *Archive) parseCentralDirectory(cd []byte, d *zipDir) error {
	recs := make([]zipRecord, 0, min(d.count, 1<<16))
	p := cd
	for i := uint64(0); i < d.count; i++ {
		if len(p) < centralLen || le32(p) != sigCentral {
			return fmt.Errorf("%w: central directory record %d of %d is malformed", ErrFormat, i+1, d.count)
		}
		nameLen, extraLen, commentLen := int(le16(p[28:])), int(le16(p[30:])), int(le16(p[32:]))
		total := centralLen + nameLen + extraLen + commentLen
		if len(p) < total {
			return fmt.Errorf("%w: central directory record %d of %d runs past the directory", ErrFormat, i+1, d.count)
		}
		rec, err := a.zipEntry(p[:total], nameLen, extraLen, d)
		if err != nil {
			a.problem(fmt.Errorf("zip member %d: %w", i+1, err))
		} else if rec != nil {
			recs = append(recs, zipRecord{e: rec, ok: true, nameLn: nameLen})
		}
		p = p[total:]
	}
	a.refuseOverlaps(recs, d.off+d.base)
	for _, r := range recs {
		// add refuses a member for the entry limit, which ends the listing,
		// or for clashing with a directory, which it records itself.
		if r.ok && !a.add(r.e) && a.Len() >= a.lim.MaxEntries {
			a.problem(fmt.Errorf("%w: more than %d entries; the rest is not listed", ErrLimit, a.lim.MaxEntries))
			break
		}
	}
	return nil
}

// zipEntry decodes one central directory record; nil, nil for the root.
func (a *Archive) zipEntry(rec []byte, nameLen, extraLen int, d *zipDir) (*Entry, error) {
	madeBy, flags, meth := le16(rec[4:]), le16(rec[8:]), le16(rec[10:])
	dosTime, dosDate := le16(rec[12:]), le16(rec[14:])
	crc := le32(rec[16:])
	csize, usize := uint64(le32(rec[20:])), uint64(le32(rec[24:]))
	ext := le32(rec[38:])
	hdr := uint64(le32(rec[42:]))
	raw := string(rec[centralLen : centralLen+nameLen])
	extra := rec[centralLen+nameLen : centralLen+nameLen+extraLen]
	mtime := dosToTime(dosDate, dosTime)

	for len(extra) >= 4 {
		id, n := le16(extra), int(le16(extra[2:]))
		if 4+n > len(extra) {
			break
		}
		f := extra[4 : 4+n]
		switch id {
		case 0x0001: // zip64: only the fields that overflowed, in this order
			if usize == 0xffffffff && len(f) >= 8 {
				usize, f = le64(f), f[8:]
			}
			if csize == 0xffffffff && len(f) >= 8 {
				csize, f = le64(f), f[8:]
			}
			if hdr == 0xffffffff && len(f) >= 8 {
				hdr = le64(f)
			}
		case 0x5455: // extended timestamp: flags, then mtime when bit 0
			if len(f) >= 5 && f[0]&1 != 0 {
				mtime = time.Unix(int64(int32(le32(f[1:]))), 0).UTC()
			}
		case 0x000a: // NTFS: reserved, then tag 1 of 24 bytes, mtime first
			if len(f) >= 32 && le16(f[4:]) == 1 && le16(f[6:]) >= 24 {
				ticks := int64(le64(f[8:])) // 100 ns since 1601
				const epochDiff = 11644473600
				mtime = time.Unix(ticks/1e7-epochDiff, ticks%1e7*100).UTC()
			}
		}
		extra = extra[4+n:]
	}

	name, dir, root, err := cleanName(raw)
	if err != nil {
		return nil, err
	}
	if root {
		return nil, nil // "./" or "/": the root itself, which is no entry
	}
	mode := zipMode(madeBy, ext, dir)
	e := &Entry{Name: name, Mode: mode, ModTime: mtime}
	e.data = placement{hdrOff: -1, dataOff: -1, crc: crc, hasCRC: true, zipFlags: flags}
	if raw != name {
		e.data.rawName = raw
	}
	if csize > 1<<62 || usize > 1<<62 || hdr > 1<<62 {
		return nil, fmt.Errorf("%w: %q: sizes or offset beyond 2^62", ErrFormat, name)
	}
	e.data.hdrOff = int64(hdr) + d.base
	e.data.csize = int64(csize)
	if e.data.hdrOff < 0 || e.data.hdrOff+localLen+int64(nameLen) > d.off+d.base {
		return nil, fmt.Errorf("%w: %q: local header offset %d is outside the archive's members", ErrFormat, name, hdr)
	}
	if mode.IsDir() {
		e.data.method = methodNone
		return e, nil
	}
	e.Size = int64(usize)
	switch meth {
	case 0:
		e.data.method = methodStored
		if csize != usize && flags&flagEncrypted == 0 {
			return nil, fmt.Errorf("%w: %q: stored member with %d bytes stored and %d declared", ErrFormat, name, csize, usize)
		}
	case 8:
		e.data.method = methodDeflate
		if usize > 0 && (usize-1)/uint64(a.lim.MaxRatio) >= csize {
			return nil, fmt.Errorf("%w: %q declares %d bytes from %d compressed (ratio limit %d)", ErrLimit, name, usize, csize, a.lim.MaxRatio)
		}
	default:
		e.data.method = methodOther
	}
	if e.data.hdrOff+localLen+int64(nameLen)+int64(csize) > d.off+d.base {
		return nil, fmt.Errorf("%w: %q: %d bytes at %d run into the central directory (a member claiming more than the archive holds)", ErrFormat, name, csize, hdr)
	}
	return e, nil
}

// refuseOverlaps sorts the records by local header offset and refuses
// every record whose header and data reach into the next one's header: a
// valid zip never shares bytes between members (golang/go#33026). Each
// surviving record learns where its data must end.
func (a *Archive) refuseOverlaps(recs []zipRecord, cdStart int64) {
	idx := make([]int, 0, len(recs))
	for i, r := range recs {
		if r.e != nil {
			r := &recs[i]
			r.end = r.e.data.hdrOff + localLen + int64(r.nameLn) + r.e.data.csize
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(x, y int) bool { return recs[idx[x]].e.data.hdrOff < recs[idx[y]].e.data.hdrOff })
	for k, i := range idx {
		r := &recs[i]
		next := cdStart
		if k+1 < len(idx) {
			next = min(cdStart, recs[idx[k+1]].e.data.hdrOff)
		}
		r.e.data.limit = next
		if r.end > next {
			for _, j := range []int{i, idx[min(k+1, len(idx)-1)]} {
				if recs[j].ok {
					recs[j].ok = false
					a.problem(fmt.Errorf("%w: %q at %d reaches %d, past the member at %d", ErrOverlap, recs[j].e.Name, r.e.data.hdrOff, r.end, next))
				}
			}
		}
	}
}

func zipMode(madeBy uint16, ext uint32, dir bool) fs.FileMode {
	var mode fs.FileMode
	switch madeBy >> 8 {
	case 3, 19: // Unix, OS X: st_mode in the high 16 bits
		unix := ext >> 16
		mode = fs.FileMode(unix & 0o777)
		switch unix & 0o170000 {
		case 0o040000:
			mode |= fs.ModeDir
		case 0o120000:
			mode |= fs.ModeSymlink
		}
		if unix == 0 {
			mode = 0o644
		}
	default: // MS-DOS attributes
		mode = 0o644
		if ext&0x01 != 0 {
			mode = 0o444
		}
		if ext&0x10 != 0 {
			mode |= fs.ModeDir
		}
	}
	if dir {
		mode = mode&0o777 | fs.ModeDir
	}
	if mode.IsDir() && mode&0o700 == 0 {
		mode |= 0o755
	}
	return mode
}

func dosToTime(date, tm uint16) time.Time {
	if date == 0 {
		return time.Time{}
	}
	return time.Date(int(date>>9)+1980, time.Month(date>>5&0xf), int(date&0x1f),
		int(tm>>11), int(tm>>5&0x3f), int(tm&0x1f)*2, 0, time.Local)
}

// openZipMember reads the member's local header, once per entry, then
// returns a range or inflating reader.
func (a *Archive) openZipMember(e *Entry, snap Entry) (memberReader, error) {
	p := snap.data
	if p.zipFlags&flagEncrypted != 0 {
		return nil, fmt.Errorf("%w: encrypted member", ErrUnsupported)
	}
	if p.method == methodOther {
		return nil, fmt.Errorf("%w: compression method of %q", ErrUnsupported, snap.Name)
	}
	if p.dataOff < 0 {
		off, err := a.zipDataOffset(snap)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		e.data.dataOff = off
		a.mu.Unlock()
		p.dataOff = off
	}
	if p.method == methodStored {
		return &rangeReader{r: a.r, base: p.dataOff, size: snap.Size, want: p.crc, hasCRC: p.hasCRC}, nil
	}
	return &streamReader{
		size: snap.Size, window: max(a.lim.Window, 64<<10), jump: 1 << 62,
		src:  &zipDeflate{r: a.r, off: p.dataOff, csize: p.csize},
		want: p.crc, hasCRC: p.hasCRC, strictEnd: true,
	}, nil
}

// zipDataOffset reads the local header and checks it against the
// central directory: same name, and data that ends before the next member.
func (a *Archive) zipDataOffset(snap Entry) (int64, error) {
	p := snap.data
	raw := snap.Name
	if p.rawName != "" {
		raw = p.rawName
	}
	n := min(int64(localLen+len(raw)), p.limit-p.hdrOff)
	if n < localLen {
		return 0, fmt.Errorf("%w: no room for a local header at %d", ErrFormat, p.hdrOff)
	}
	buf := make([]byte, n)
	if err := readFullAt(a.r, buf, p.hdrOff); err != nil {
		return 0, err
	}
	if le32(buf) != sigLocal {
		return 0, fmt.Errorf("%w: no local header at %d", ErrFormat, p.hdrOff)
	}
	nameLen, extraLen := int64(le16(buf[26:])), int64(le16(buf[28:]))
	if int(nameLen) != len(raw) || string(buf[localLen:]) != raw {
		return 0, fmt.Errorf("%w: local header at %d names another member than the central directory's %q", ErrFormat, p.hdrOff, raw)
	}
	data := p.hdrOff + localLen + nameLen + extraLen
	if data+p.csize > p.limit {
		return 0, fmt.Errorf("%w: %q: data [%d, +%d) reaches the member or directory at %d", ErrOverlap, snap.Name, data, p.csize, p.limit)
	}
	return data, nil
}

// zipDeflate opens a deflated member's stream from its start.
type zipDeflate struct {
	r          io.ReaderAt
	off, csize int64
}

func (z *zipDeflate) restartPoint(int64) int64 { return 0 }

func (z *zipDeflate) open(int64) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(z.r, z.off, z.csize), 64<<10)
	return &flateStream{fr: flate.NewReader(br)}, nil
}

// flateStream marks the decompressor's corruption errors as ErrFormat.
type flateStream struct{ fr io.ReadCloser }

func (f *flateStream) Read(p []byte) (int, error) {
	n, err := f.fr.Read(p)
	if err != nil && err != io.EOF {
		if _, ok := err.(flate.CorruptInputError); ok || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: deflate: %v", ErrFormat, err)
		}
	}
	return n, err
}

func (f *flateStream) Close() error { return f.fr.Close() }

func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("%w: archive ends at %d, inside a record at %d", ErrFormat, off+int64(n), off)
	}
	return err
}

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
