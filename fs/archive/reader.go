package archive

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"sync"
)

// Reader reads one member for one open handle. ReadAt is safe for
// concurrent use (calls on one Reader are serialised); use one Reader per
// handle so that each keeps its own stream position and window.
//
// A Reader never yields a byte past the member's declared size, never
// returns bytes a check has failed on, and, once a member's data has been
// found corrupt (ErrFormat, ErrChecksum), fails every later read. An error
// from the underlying io.ReaderAt is returned as it is and the next read
// tries again.
type Reader struct {
	a     *Archive
	entry Entry
	impl  memberReader
}

type memberReader interface {
	ReadAt(p []byte, off int64) (int, error)
	Close() error
}

// Entry returns the entry this Reader reads.
func (r *Reader) Entry() Entry { return r.entry }

// Size is the member's length.
func (r *Reader) Size() int64 { return r.entry.Size }

// ReadAt implements io.ReaderAt over the member's decompressed bytes.
// A tar.gz member whose gzip data failed its check once the pass reached
// the end fails from then on.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if r.a.kind == TarGz {
		r.a.mu.RLock()
		bad := r.a.damagedLocked(&r.entry)
		r.a.mu.RUnlock()
		if bad {
			return 0, errDamaged(r.entry.Name)
		}
	}
	return r.impl.ReadAt(p, off)
}

// Close releases the handle's decompressor and window.
func (r *Reader) Close() error { return r.impl.Close() }

// Open returns a Reader of a regular member. Opening a zip member reads its
// local header once (about 100 bytes). Directories and symlinks cannot be
// opened; use Readlink for a symlink's target.
func (a *Archive) Open(name string) (*Reader, error) {
	e, err := a.entry(name)
	if err != nil {
		return nil, err
	}
	a.mu.RLock()
	snap := *e
	a.mu.RUnlock()
	switch {
	case snap.IsDir():
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	case snap.Mode&fs.ModeSymlink != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a symlink: use Readlink")}
	case snap.Mode.Type() != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrUnsupported}
	}
	impl, err := a.openImpl(e, snap)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	a.mu.RLock()
	snap = *e
	a.mu.RUnlock()
	return &Reader{a: a, entry: snap, impl: impl}, nil
}

func (a *Archive) openImpl(e *Entry, snap Entry) (memberReader, error) {
	switch a.kind {
	case Zip:
		return a.openZipMember(e, snap)
	case Tar:
		return a.openTarMember(snap)
	case TarGz:
		return a.openTarGzMember(snap)
	}
	return nil, ErrUnsupported
}

// PassOpener is an optional interface of the io.ReaderAt an Archive reads
// through. A tar.gz member read inflates the archive forward from a
// checkpoint; OpenPass returns a reader of the same archive bytes for one
// such pass, which starts at off and needs little past end, so that it may
// read ahead as far as end and no further (a cache's read-ahead, earned by
// the pass's sequential reads, would otherwise run past the member). end
// is a hint: a read past it must still succeed. The Archive closes the
// reader when the pass ends.
type PassOpener interface {
	OpenPass(off, end int64) (ReadAtCloser, error)
}

// ReadAtCloser is an io.ReaderAt that is closed when no longer needed.
type ReadAtCloser interface {
	io.ReaderAt
	io.Closer
}

type nopReadAtCloser struct{ io.ReaderAt }

func (nopReadAtCloser) Close() error { return nil }

// openPass returns the reader a pass over [off, end) of the archive reads
// through: the ReaderAt's own when it is a PassOpener, else the ReaderAt.
func (a *Archive) openPass(off, end int64) (ReadAtCloser, error) {
	if p, ok := a.r.(PassOpener); ok {
		return p.OpenPass(off, end)
	}
	return nopReadAtCloser{a.r}, nil
}

// maxLinkLen bounds a symlink target read from a zip member.
const maxLinkLen = 4096

// Readlink returns a symlink's target as stored. For a zip it reads the
// member's data (a few bytes, checked against its CRC-32).
func (a *Archive) Readlink(name string) (string, error) {
	e, err := a.entry(name)
	if err != nil {
		return "", err
	}
	a.mu.RLock()
	snap := *e
	a.mu.RUnlock()
	if snap.Mode&fs.ModeSymlink == 0 {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: errors.New("not a symlink")}
	}
	if a.kind != Zip {
		return snap.Linkname, nil
	}
	if snap.Size > maxLinkLen {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fmt.Errorf("%w: symlink target of %d bytes", ErrLimit, snap.Size)}
	}
	impl, err := a.openImpl(e, snap)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	defer impl.Close()
	buf := make([]byte, snap.Size)
	if _, err := impl.ReadAt(buf, 0); err != nil && err != io.EOF {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return string(buf), nil
}

// rangeReader serves a member whose bytes are the range [base, base+size)
// of r. It checks the CRC-32, when there is one, for a handle that reads
// the member from its start to its end in order.
type rangeReader struct {
	r          io.ReaderAt
	base, size int64
	want       uint32
	hasCRC     bool

	mu     sync.Mutex // protects the fields below
	crcPos int64      // the CRC covers [0, crcPos)
	crc    uint32
	bad    error
}

func (rr *rangeReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset", fs.ErrInvalid)
	}
	if off >= rr.size {
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > rr.size-off {
		n = rr.size - off
	}
	got, err := rr.r.ReadAt(p[:n], rr.base+off)
	if int64(got) < n {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%w: member data cut short at %d of %d bytes", ErrFormat, off+int64(got), rr.size)
		}
		return got, err
	}
	if rr.hasCRC {
		if err := rr.track(p[:n], off); err != nil {
			return 0, err
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// track extends the running CRC with a read that continues it, and fails
// the read that reaches the end of a member whose CRC does not match.
func (rr *rangeReader) track(p []byte, off int64) error {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.bad != nil {
		return rr.bad
	}
	end := off + int64(len(p))
	if off > rr.crcPos || end <= rr.crcPos {
		return nil
	}
	rr.crc = crc32.Update(rr.crc, crc32.IEEETable, p[rr.crcPos-off:])
	rr.crcPos = end
	if rr.crcPos == rr.size && rr.crc != rr.want {
		rr.bad = fmt.Errorf("%w: CRC-32 %08x, header says %08x", ErrChecksum, rr.crc, rr.want)
		return rr.bad
	}
	return nil
}

func (rr *rangeReader) Close() error { return nil }

// streamSource produces a member's bytes for a streamReader.
type streamSource interface {
	// restartPoint returns the largest offset <= want from which open can
	// start (0 when the member can only be read from its start).
	restartPoint(want int64) int64
	// open returns a reader of the member's bytes from start, a value
	// restartPoint returned; closing it releases the decompressor.
	open(start int64) (io.ReadCloser, error)
}

// streamReader reads a compressed member forward, keeping the last
// window bytes so that the kernel's slightly out-of-order reads need no
// restart. A read before the window restarts from the nearest restart
// point; a read far ahead jumps to a later restart point when there is one.
type streamReader struct {
	size      int64
	src       streamSource
	window    int
	jump      int64 // a read this far past pos looks for a later restart point
	want      uint32
	hasCRC    bool
	strictEnd bool // the stream must end exactly at size (zip deflate)

	mu       sync.Mutex // protects the fields below
	rc       io.ReadCloser
	pos      int64  // member offset of the next byte rc yields
	ring     []byte // the window: bytes [pos-filled, pos), at ring[(x) % len(ring)]
	filled   int
	crcOK    bool // crc covers [0, pos)
	crc      uint32
	ended    bool // the end of the member was reached and checked
	lastFill int  // bytes the last fill appended
	bad      error
	tmp      []byte
}

func (s *streamReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset", fs.ErrInvalid)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	end := off + int64(len(p))
	if end > s.size {
		end = s.size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bad != nil {
		return 0, s.bad
	}
	if s.rc == nil || off < s.pos-int64(s.filled) {
		if err := s.restart(s.src.restartPoint(off)); err != nil {
			return 0, err
		}
	} else if off > s.pos+s.jump {
		if rp := s.src.restartPoint(off); rp > s.pos {
			if err := s.restart(rp); err != nil {
				return 0, err
			}
		}
	}
	// The part already in the window.
	if off < s.pos {
		hi := min(end, s.pos)
		s.copyFromRing(p[:hi-off], off)
	}
	for s.pos < end {
		if err := s.fill(); err != nil {
			return 0, err
		}
		// fill appended [pos-k, pos) to the ring; copy what p wants of it.
		k := int64(s.lastFill)
		lo := max(off, s.pos-k)
		hi := min(end, s.pos)
		if lo < hi {
			s.copyFromRing(p[lo-off:hi-off], lo)
		}
	}
	if s.pos == s.size && !s.ended {
		if err := s.checkEnd(); err != nil {
			return 0, err
		}
	}
	n := int(end - off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *streamReader) restart(start int64) error {
	s.closeSource()
	rc, err := s.src.open(start)
	if err != nil {
		return s.fail(err)
	}
	s.rc, s.pos, s.filled = rc, start, 0
	s.crcOK, s.crc = start == 0, 0
	if s.ring == nil {
		s.ring = make([]byte, s.window)
		s.tmp = make([]byte, 32<<10)
	}
	return nil
}

func (s *streamReader) closeSource() {
	if s.rc != nil {
		s.rc.Close()
		s.rc = nil
	}
}

// fail keeps a corruption error for every later read; any other error
// (the network, the cache) drops the stream so the next read starts over.
func (s *streamReader) fail(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: member data ends at %d of %d bytes: %v", ErrFormat, s.pos, s.size, err)
	}
	if errors.Is(err, ErrFormat) || errors.Is(err, ErrChecksum) {
		s.bad = err
	}
	s.closeSource()
	return err
}

// fill reads the next piece of the member into the ring.
func (s *streamReader) fill() error {
	want := min(int64(len(s.tmp)), s.size-s.pos)
	n, err := s.rc.Read(s.tmp[:want])
	s.lastFill = n
	if n > 0 {
		piece := s.tmp[:n]
		if s.crcOK {
			s.crc = crc32.Update(s.crc, crc32.IEEETable, piece)
		}
		s.appendRing(piece)
		s.pos += int64(n)
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return s.fail(err)
}

// checkEnd runs once the last byte is in: a zip deflate stream must end
// here, and the CRC must match.
func (s *streamReader) checkEnd() error {
	if s.strictEnd {
		var one [1]byte
		n, err := io.ReadFull(s.rc, one[:])
		if n > 0 {
			return s.fail(fmt.Errorf("%w: member data longer than the %d bytes its header declares", ErrFormat, s.size))
		}
		if err != io.EOF && err != io.ErrUnexpectedEOF {
			return s.fail(err)
		}
	}
	if s.hasCRC && s.crcOK && s.crc != s.want {
		return s.fail(fmt.Errorf("%w: CRC-32 %08x, header says %08x", ErrChecksum, s.crc, s.want))
	}
	s.ended = s.crcOK || !s.hasCRC
	return nil
}

func (s *streamReader) appendRing(b []byte) {
	w := len(s.ring)
	first := s.pos // member offset of b[0]
	if len(b) > w {
		first += int64(len(b) - w)
		b = b[len(b)-w:]
	}
	at := int(first % int64(w))
	n := copy(s.ring[at:], b)
	copy(s.ring, b[n:])
	s.filled = min(s.filled+len(b), w)
}

// copyFromRing copies the window's bytes at member offset off into dst.
func (s *streamReader) copyFromRing(dst []byte, off int64) {
	w := int64(len(s.ring))
	at := int(off % w)
	n := copy(dst, s.ring[at:])
	copy(dst[n:], s.ring)
}

func (s *streamReader) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeSource()
	s.ring, s.tmp = nil, nil
	if s.bad == nil {
		s.bad = fs.ErrClosed
	}
	return nil
}
