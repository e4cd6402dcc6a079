package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// OpenTar lists a tar archive by hopping from header to header: each hop
// is one small read at an offset computed from the previous header (the
// member data in between is never read). pax and GNU headers, long names
// and links are decoded by archive/tar. A listing that meets a corrupt or
// truncated header keeps what it read before and says why in Err; an
// archive whose first header is not a tar header is an error.
func OpenTar(r io.ReaderAt, size int64, lim Limits) (*Archive, error) {
	a := newArchive(r, size, Tar, lim)
	br := &blockReader{r: r, size: size, buf: make([]byte, tarReadAhead)}
	err := a.listTar(context.Background(), br, size, br)
	if err != nil && a.Len() == 0 {
		return nil, fmt.Errorf("tar: %w", err)
	}
	a.progress.Store(size)
	a.finish(err)
	return a, nil
}

// tarReadAhead is how much a header read fetches: from the last data byte
// of the previous member, its padding (< 512) and the next header block (512)
// always fit, so a hop costs one read; a pax or long-name header adds one.
const tarReadAhead = 1024

// tarPosition reports the tar stream offset a tar.Reader has reached, and
// where the header chain of the member it is parsing began.
type tarPosition interface {
	offset() int64
	markHeader() // start watching for the next member's first header block
	header() int64
}

// inputPosition is a tarPosition over a compressed stream (the tar.gz
// pass): inputOffset is how far into the archive it has read to decode
// what it yielded so far.
type inputPosition interface {
	inputOffset() int64
}

// listTar walks the tar stream in src; limit is the stream's length when
// known (plain tar), or -1 (tar.gz: the pass finds its end).
func (a *Archive) listTar(ctx context.Context, src io.Reader, limit int64, pos tarPosition) error {
	tr := tar.NewReader(src)
	// A member is listed once the stream has gone past its data, so that a
	// truncated last member never appears (a tar.gz pass cannot know the
	// stream's length before reaching its end).
	var pending *Entry
	flush := func() error {
		if pending == nil {
			return nil
		}
		e := pending
		pending = nil
		if end := e.data.dataOff + e.data.csize; !e.data.sparse && end > pos.offset() {
			return fmt.Errorf("%w: %q needs data up to %d but the stream ends at %d (truncated)", ErrFormat, e.Name, end, pos.offset())
		}
		if in, ok := pos.(inputPosition); ok && e.data.limit == 0 {
			// A hard link already has its target's.
			e.data.limit = in.inputOffset()
		}
		if !a.add(e) && a.Len() >= a.lim.MaxEntries {
			return fmt.Errorf("%w: more than %d entries; the rest is not listed", ErrLimit, a.lim.MaxEntries)
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		pos.markHeader()
		hdr, err := tr.Next()
		if err == io.EOF {
			if pos.header() < 0 {
				// Not even one zero block: a tar cut at a member boundary.
				a.problem(fmt.Errorf("%w: the archive ends after %d members without its end-of-archive blocks (truncated?)", ErrFormat, a.Len()))
			}
			return flush()
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			if ferr := flush(); ferr != nil {
				return ferr
			}
			return fmt.Errorf("%w: after %d members, at offset %d: %v", ErrFormat, a.Len(), pos.offset(), err)
		}
		if err := flush(); err != nil {
			return err
		}
		dataOff := pos.offset()
		if limit >= 0 && hdr.Size > limit-dataOff && !isSparse(hdr) {
			return fmt.Errorf("%w: %q claims %d bytes at %d but the archive ends at %d (truncated)", ErrFormat, hdr.Name, hdr.Size, dataOff, limit)
		}
		e, err := a.tarEntry(hdr, pos.header(), dataOff)
		if err != nil {
			a.problem(fmt.Errorf("tar member %q: %w", hdr.Name, err))
			continue
		}
		pending = e
	}
}

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// tarEntry turns a header into an entry; nil, nil for headers that are not
// members (the root, pax global headers, volume labels).
func (a *Archive) tarEntry(hdr *tar.Header, hdrOff, dataOff int64) (*Entry, error) {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, 'V':
		return nil, nil
	}
	name, dir, root, err := cleanName(hdr.Name)
	if err != nil {
		return nil, err
	}
	if root {
		return nil, nil
	}
	e := &Entry{Name: name, Mode: fs.FileMode(hdr.Mode) & 0o777, ModTime: hdr.ModTime}
	e.data = placement{hdrOff: hdrOff, dataOff: dataOff, inStream: a.kind == TarGz, ownHdr: hdrOff}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		if dir { // old tars mark directories only by the slash
			e.Mode |= fs.ModeDir
			return e, nil
		}
		if hdr.Size < 0 {
			return nil, fmt.Errorf("%w: negative size", ErrFormat)
		}
		e.Size = hdr.Size
		e.data.method = methodStored
		e.data.csize = hdr.Size
		e.data.sparse = isSparse(hdr)
	case tar.TypeDir:
		e.Mode |= fs.ModeDir
	case tar.TypeSymlink:
		if strings.IndexByte(hdr.Linkname, 0) >= 0 || hdr.Linkname == "" {
			return nil, fmt.Errorf("%w: symlink target %q", ErrUnsafeName, hdr.Linkname)
		}
		e.Mode |= fs.ModeSymlink
		e.Linkname = hdr.Linkname
		e.Size = int64(len(hdr.Linkname))
		e.LinkEscapes = linkEscapes(name, hdr.Linkname)
	case tar.TypeLink:
		target, _, _, err := cleanName(hdr.Linkname)
		if err != nil {
			return nil, fmt.Errorf("hard link: %w", err)
		}
		t, ok := a.Lookup(target)
		if !ok || t.Mode.Type() != 0 {
			return nil, fmt.Errorf("%w: hard link to %q, which is not an earlier regular member", ErrFormat, hdr.Linkname)
		}
		t.Name, t.Implicit = name, false
		t.data.ownHdr = hdrOff // its name and target came from its own header
		return &t, nil
	default:
		return nil, fmt.Errorf("%w: member type %q", ErrUnsupported, hdr.Typeflag)
	}
	if e.Mode.IsDir() && e.Mode&0o700 == 0 {
		e.Mode |= 0o700
	}
	return e, nil
}

func (a *Archive) openTarMember(snap Entry) (memberReader, error) {
	p := snap.data
	if p.sparse {
		return a.sparseReader(snap, func(off int64) (io.ReadCloser, error) {
			br := &blockReader{r: a.r, size: a.size, pos: off, buf: make([]byte, 64<<10)}
			return io.NopCloser(br), nil
		}), nil
	}
	return &rangeReader{r: a.r, base: p.dataOff, size: snap.Size}, nil
}

// sparseReader reads a GNU sparse member through archive/tar, which knows
// its map, starting from the member's first header each time. at opens
// the tar stream at an offset.
func (a *Archive) sparseReader(snap Entry, at func(off int64) (io.ReadCloser, error)) memberReader {
	return &streamReader{
		size: snap.Size, window: max(a.lim.Window, 64<<10), jump: 1 << 62,
		src: &tarSparse{at: at, hdrOff: snap.data.hdrOff, size: snap.Size, dataOff: snap.data.dataOff},
	}
}

type tarSparse struct {
	at            func(off int64) (io.ReadCloser, error)
	hdrOff        int64
	dataOff, size int64
}

func (s *tarSparse) restartPoint(int64) int64 { return 0 }

func (s *tarSparse) open(int64) (io.ReadCloser, error) {
	if s.hdrOff < 0 {
		return nil, fmt.Errorf("%w: sparse member with no header offset", ErrFormat)
	}
	rc, err := s.at(s.hdrOff)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
		rc.Close()
		return nil, fmt.Errorf("%w: sparse member header at %d: %v", ErrFormat, s.hdrOff, err)
	}
	if hdr.Size != s.size {
		rc.Close()
		return nil, fmt.Errorf("%w: sparse member header at %d no longer matches the index", ErrFormat, s.hdrOff)
	}
	return struct {
		io.Reader
		io.Closer
	}{tarData{tr}, rc}, nil
}

// tarData marks archive/tar's errors inside member data as ErrFormat.
type tarData struct{ tr *tar.Reader }

func (t tarData) Read(p []byte) (int, error) {
	n, err := t.tr.Read(p)
	if err != nil && err != io.EOF && (errors.Is(err, tar.ErrHeader) || err == io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return n, err
}

// blockReader gives archive/tar a seekable stream over an io.ReaderAt. A
// Seek only moves the offset, so skipping member data costs nothing; a
// read fetches a little ahead, so padding and the next header come in one
// read.
type blockReader struct {
	r      io.ReaderAt
	size   int64
	pos    int64
	buf    []byte
	bufOff int64
	bufLen int
	mark   int64 // offset of the first header block read since markHeader, or -1
}

func (b *blockReader) offset() int64 { return b.pos }
func (b *blockReader) markHeader()   { b.mark = -1 }
func (b *blockReader) header() int64 { return b.mark }

func (b *blockReader) Read(p []byte) (int, error) {
	if b.pos >= b.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.mark < 0 && len(p) == 512 && b.pos%512 == 0 {
		b.mark = b.pos
	}
	if b.pos < b.bufOff || b.pos >= b.bufOff+int64(b.bufLen) {
		if len(p) >= len(b.buf) {
			m := min(int64(len(p)), b.size-b.pos)
			n, err := b.r.ReadAt(p[:m], b.pos)
			b.pos += int64(n)
			if n > 0 {
				return n, nil
			}
			return 0, noProgress(err)
		}
		m := min(int64(len(b.buf)), b.size-b.pos)
		n, err := b.r.ReadAt(b.buf[:m], b.pos)
		b.bufOff, b.bufLen = b.pos, n
		if n == 0 {
			return 0, noProgress(err)
		}
	}
	n := copy(p, b.buf[b.pos-b.bufOff:b.bufLen])
	b.pos += int64(n)
	return n, nil
}

func noProgress(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (b *blockReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.pos
	case io.SeekEnd:
		offset += b.size
	default:
		return 0, fs.ErrInvalid
	}
	if offset < 0 {
		return 0, fs.ErrInvalid
	}
	b.pos = offset
	return offset, nil
}
