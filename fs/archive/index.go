package archive

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"time"
)

// The persisted index: a fixed header, then a deflated body of varints.
//
//	magic "rfsarch" | version | kind | archive size (8) | CRC-32 of the body (4) | body
const (
	indexMagic   = "rfsarch"
	indexVersion = 1
	indexHdrLen  = len(indexMagic) + 2 + 8 + 4
	// maxIndexBody bounds what LoadIndex inflates, whatever the body says.
	maxIndexBody = 1 << 30
)

// MarshalBinary returns the complete listing (and a tar.gz archive's
// checkpoints) so that a caller can keep it beside the archive's cache and
// later list and read the archive with LoadIndex, without a listing pass.
// It fails while a tar.gz pass is still running.
func (a *Archive) MarshalBinary() ([]byte, error) {
	select {
	case <-a.done:
	default:
		return nil, errors.New("archive: the listing pass is still running")
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	var body bytes.Buffer
	fw, _ := flate.NewWriter(&body, flate.BestSpeed)
	w := &indexWriter{w: bufio.NewWriter(fw)}
	w.uvarint(uint64(len(a.entries)))
	for _, e := range a.entries {
		w.str(e.Name)
		w.uvarint(uint64(e.Mode))
		w.varint(e.Size)
		w.varint(e.ModTime.Unix())
		w.uvarint(uint64(e.ModTime.Nanosecond()))
		w.str(e.Linkname)
		var flags byte
		for i, b := range []bool{e.Implicit, e.LinkEscapes, e.data.hasCRC, e.data.sparse, !e.ModTime.IsZero()} {
			if b {
				flags |= 1 << i
			}
		}
		w.byte(flags)
		w.byte(byte(e.data.method))
		for _, v := range []int64{e.data.hdrOff, e.data.dataOff, e.data.limit, e.data.csize} {
			w.varint(v)
		}
		w.uvarint(uint64(e.data.crc))
		w.str(e.data.rawName)
		w.uvarint(uint64(e.data.zipFlags))
	}
	var msgs []string
	for _, p := range a.problems {
		msgs = append(msgs, p.Error())
	}
	if a.fatal != nil {
		msgs = append(msgs, a.fatal.Error())
	}
	w.uvarint(uint64(len(msgs)))
	for _, m := range msgs {
		w.str(m)
	}
	var cps []checkpoint
	if a.gz != nil {
		cps = a.gz.cps
	}
	w.uvarint(uint64(len(cps)))
	for _, cp := range cps {
		w.varint(cp.out)
		w.varint(cp.in)
		w.byte(cp.bit)
		w.varint(cp.memberStart)
		w.uvarint(uint64(cp.crc))
		w.str(string(cp.window))
	}
	if err := w.w.Flush(); err != nil {
		return nil, err
	}
	if err := fw.Close(); err != nil {
		return nil, err
	}
	out := make([]byte, indexHdrLen, indexHdrLen+body.Len())
	copy(out, indexMagic)
	out[len(indexMagic)] = indexVersion
	out[len(indexMagic)+1] = byte(a.kind)
	binary.LittleEndian.PutUint64(out[len(indexMagic)+2:], uint64(a.size))
	binary.LittleEndian.PutUint32(out[len(indexMagic)+10:], crc32.ChecksumIEEE(body.Bytes()))
	return append(out, body.Bytes()...), nil
}

type indexWriter struct {
	w   *bufio.Writer
	buf [binary.MaxVarintLen64]byte
}

func (w *indexWriter) uvarint(v uint64) { w.w.Write(binary.AppendUvarint(w.buf[:0], v)) }
func (w *indexWriter) varint(v int64)   { w.w.Write(binary.AppendVarint(w.buf[:0], v)) }
func (w *indexWriter) byte(b byte)      { w.w.WriteByte(b) }
func (w *indexWriter) str(s string)     { w.uvarint(uint64(len(s))); w.w.WriteString(s) }

// LoadIndex rebuilds an Archive from MarshalBinary's output without reading
// the archive; r and size must be the same archive (the caller's cache
// pins its version). A damaged, foreign or mismatched index is an error
// wrapping ErrFormat, never a wrong listing: the caller then lists the
// archive again.
func LoadIndex(r io.ReaderAt, size int64, index []byte, lim Limits) (*Archive, error) {
	a, err := loadIndex(r, size, index, lim)
	if err != nil {
		return nil, fmt.Errorf("archive index: %w", err)
	}
	return a, nil
}

func loadIndex(r io.ReaderAt, size int64, index []byte, lim Limits) (*Archive, error) {
	if len(index) < indexHdrLen || string(index[:len(indexMagic)]) != indexMagic {
		return nil, fmt.Errorf("%w: not an archive index", ErrFormat)
	}
	if v := index[len(indexMagic)]; v != indexVersion {
		return nil, fmt.Errorf("%w: index version %d, this program reads %d", ErrFormat, v, indexVersion)
	}
	kind := Kind(index[len(indexMagic)+1])
	if kind != Zip && kind != Tar && kind != TarGz {
		return nil, fmt.Errorf("%w: unknown archive kind %d", ErrFormat, kind)
	}
	if got := int64(binary.LittleEndian.Uint64(index[len(indexMagic)+2:])); got != size {
		return nil, fmt.Errorf("%w: index of a %d-byte archive, this one has %d", ErrFormat, got, size)
	}
	body := index[indexHdrLen:]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(index[len(indexMagic)+10:]) {
		return nil, fmt.Errorf("%w: index checksum mismatch", ErrFormat)
	}
	a := newArchive(r, size, kind, lim)
	if kind == TarGz {
		a.gz = &gzIndex{}
	}
	rd := &indexReader{r: bufio.NewReader(io.LimitReader(flate.NewReader(bytes.NewReader(body)), maxIndexBody))}
	if err := a.decodeIndex(rd); err != nil {
		return nil, err
	}
	if rd.err != nil {
		return nil, fmt.Errorf("%w: index body: %v", ErrFormat, rd.err)
	}
	a.progress.Store(size)
	close(a.done)
	return a, nil
}

func (a *Archive) decodeIndex(rd *indexReader) error {
	n := rd.uvarint()
	if n > uint64(a.lim.MaxEntries) {
		return fmt.Errorf("%w: index lists %d entries, the limit is %d", ErrLimit, n, a.lim.MaxEntries)
	}
	for i := uint64(0); i < n && rd.err == nil; i++ {
		e := &Entry{}
		e.Name = rd.str(maxNameLen)
		e.Mode = fs.FileMode(rd.uvarint())
		e.Size = rd.varint()
		sec, nsec := rd.varint(), rd.uvarint()
		e.Linkname = rd.str(maxNameLen)
		flags := rd.byte()
		e.Implicit, e.LinkEscapes = flags&1 != 0, flags&2 != 0
		e.data.hasCRC, e.data.sparse = flags&4 != 0, flags&8 != 0
		if flags&16 != 0 && nsec < 1e9 {
			e.ModTime = time.Unix(sec, int64(nsec))
		}
		e.data.method = method(rd.byte())
		e.data.hdrOff, e.data.dataOff, e.data.limit, e.data.csize = rd.varint(), rd.varint(), rd.varint(), rd.varint()
		e.data.crc = uint32(rd.uvarint())
		e.data.rawName = rd.str(maxNameLen)
		e.data.zipFlags = uint16(rd.uvarint())
		e.data.inStream = a.kind == TarGz
		if rd.err != nil {
			break
		}
		if err := a.insertLoaded(e); err != nil {
			return err
		}
	}
	nmsg := rd.uvarint()
	for i := uint64(0); i < nmsg && i < maxProblems+1 && rd.err == nil; i++ {
		a.problems = append(a.problems, errors.New(rd.str(1<<16)))
	}
	ncp := rd.uvarint()
	if ncp > 0 && a.gz == nil {
		return fmt.Errorf("%w: checkpoints in the index of a %s", ErrFormat, a.kind)
	}
	var prev int64 = -1
	for i := uint64(0); i < ncp && rd.err == nil; i++ {
		cp := checkpoint{out: rd.varint(), in: rd.varint(), bit: rd.byte(), memberStart: rd.varint(), crc: uint32(rd.uvarint())}
		cp.window = []byte(rd.str(windowSize))
		if rd.err != nil {
			break
		}
		if cp.out <= prev || cp.in < 0 || cp.in >= a.size || cp.bit > 7 || cp.memberStart > cp.out || cp.out-int64(len(cp.window)) < cp.memberStart && len(cp.window) < windowSize {
			return fmt.Errorf("%w: checkpoint %d is inconsistent", ErrFormat, i)
		}
		prev = cp.out
		a.gz.cps = append(a.gz.cps, cp)
	}
	return nil
}

// insertLoaded adds an entry from an index, checking it as the listing
// would have made it: a clean name, new, inside an existing directory,
// with data inside the archive.
func (a *Archive) insertLoaded(e *Entry) error {
	bad := func(why string) error { return fmt.Errorf("%w: index entry %q: %s", ErrFormat, e.Name, why) }
	if name, _, root, err := cleanName(e.Name); err != nil || root || name != e.Name {
		return bad("not a clean name")
	}
	if _, dup := a.byName[e.Name]; dup {
		return bad("listed twice")
	}
	switch e.Mode.Type() {
	case 0, fs.ModeDir, fs.ModeSymlink:
	default:
		return bad("unknown type")
	}
	p := e.data
	if e.Size < 0 || p.csize < 0 || p.method > methodOther {
		return bad("negative size")
	}
	if e.Mode.Type() == 0 && p.method != methodNone {
		if p.dataOff < -1 || (a.kind != TarGz && p.dataOff >= 0 && p.dataOff+p.csize > a.size) || (a.kind == Zip && (p.hdrOff < 0 || p.limit > a.size || p.hdrOff > p.limit)) ||
			(a.kind == TarGz && (p.limit < 0 || p.limit > a.size)) {
			return bad("data outside the archive")
		}
		if p.method == methodStored && a.kind != Zip && !p.sparse && p.csize != e.Size {
			return bad("stored size differs")
		}
	}
	parent := parentOf(e.Name)
	if parent != "" {
		i, ok := a.byName[parent]
		if !ok || !a.entries[i].IsDir() {
			return bad("its parent is not an earlier directory")
		}
	}
	a.byName[e.Name] = len(a.entries)
	a.entries = append(a.entries, e)
	a.children[parent] = append(a.children[parent], e.Name)
	return nil
}

// indexReader decodes varints, keeping the first error.
type indexReader struct {
	r   *bufio.Reader
	err error
}

func (r *indexReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(r.r)
	r.err = err
	return v
}

func (r *indexReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(r.r)
	r.err = err
	return v
}

func (r *indexReader) byte() byte {
	if r.err != nil {
		return 0
	}
	b, err := r.r.ReadByte()
	r.err = err
	return b
}

func (r *indexReader) str(max int) string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(max) {
		r.err = fmt.Errorf("a string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	_, r.err = io.ReadFull(r.r, b)
	return string(b)
}
