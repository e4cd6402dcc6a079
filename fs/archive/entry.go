package archive

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"
)

// Errors a caller can test with errors.Is. Every error this package returns
// for bad input wraps one of them; any other error came from the io.ReaderAt.
var (
	// ErrFormat: the archive or a member's data is malformed (bad signature,
	// impossible offsets, a deflate stream that does not decode, a member
	// whose data is shorter or longer than its header declares).
	ErrFormat = errors.New("malformed archive")
	// ErrChecksum: a member's data does not match its recorded CRC-32.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrOverlap: two zip members claim the same bytes (the overlapping zip bomb).
	ErrOverlap = errors.New("zip members overlap")
	// ErrLimit: a Limits bound was reached.
	ErrLimit = errors.New("archive limit exceeded")
	// ErrUnsafeName: a member name is absolute after cleaning, climbs out of
	// the archive with "..", holds a NUL or is too long.
	ErrUnsafeName = errors.New("unsafe member name")
	// ErrUnsupported: a feature this package does not read (encryption, a
	// compression method other than stored and deflate, multi-volume).
	ErrUnsupported = errors.New("unsupported archive feature")
)

// Entry describes one member as the archive lists it. Entries are values:
// a caller may keep and compare them freely.
type Entry struct {
	// Name is cleaned, slash-separated and relative: never empty, never
	// absolute, no "." or ".." component, no NUL, no trailing slash.
	Name string
	// Mode holds the type (0 for a regular file, fs.ModeDir, fs.ModeSymlink)
	// and the permission bits 0777 as the archive recorded them.
	Mode fs.FileMode
	// Size is the member's length in bytes once decompressed (0 for a
	// directory; for a symlink, the length of its target).
	Size    int64
	ModTime time.Time
	// Linkname is a symlink's target exactly as stored. For a zip it is
	// empty in a listing: call Archive.Readlink, which reads the member.
	Linkname string
	// LinkEscapes is set for a symlink whose target is absolute or climbs
	// above the archive's root. This package never follows a link.
	LinkEscapes bool
	// Implicit marks a directory the archive does not list itself but that
	// holds listed members (a zip with "a/b" and no "a/").
	Implicit bool

	data placement
}

// placement is where an entry's bytes live. Offsets are archive offsets for
// zip and tar, and offsets in the decompressed stream for tar.gz.
type placement struct {
	method   method
	hdrOff   int64 // zip: local header; tar: first header block of the member
	dataOff  int64 // first data byte; -1 until a zip's local header has been read
	limit    int64 // zip: the data must end at or before this offset; tar.gz: the archive (compressed) offset the pass had read to once past the member's data (0: not recorded)
	csize    int64 // bytes of stored (possibly compressed) data
	crc      uint32
	hasCRC   bool
	rawName  string // zip: the central directory's name when it differs from Name
	sparse   bool   // tar: GNU sparse member, read through archive/tar
	inStream bool   // tar.gz: the offsets are in the decompressed stream, not the archive
	ownHdr   int64  // tar.gz: the entry's own header (a hard link's, not its target's), for Archive.damagedLocked; not kept in an index
	zipFlags uint16
}

type method uint8

const (
	methodNone    method = iota // directories and symlinks with no data to read
	methodStored                // the bytes are a plain range of the archive (or of the tar stream)
	methodDeflate               // zip: raw deflate
	methodOther                 // zip: a method this package does not decompress
)

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Mode.IsDir() }

// Span reports the archive offset of the member's first byte when its bytes
// are a plain, uncompressed range of the archive (stored zip members, tar
// members), so a caller may serve them straight from its own cache. It
// returns ok=false for compressed members, tar.gz members, and zip members
// whose local header has not been read yet (Open reads it).
func (e *Entry) Span() (off int64, ok bool) {
	if e.data.method != methodStored || e.data.dataOff < 0 || e.data.sparse || e.data.inStream || e.Mode.Type() != 0 {
		return 0, false
	}
	return e.data.dataOff, true
}

// maxNameLen and maxComponent bound names to what Linux can show.
const (
	maxNameLen   = 4096
	maxComponent = 255
)

// cleanName turns a stored member name into an Entry.Name. It strips
// leading slashes (as tar does) and resolves "." and inner ".."; a name
// that would still leave the archive is refused. root reports a name that
// denotes the archive's root itself ("./", "/").
func cleanName(raw string) (name string, dir bool, root bool, err error) {
	if strings.IndexByte(raw, 0) >= 0 {
		return "", false, false, fmt.Errorf("%w: %q holds a NUL byte", ErrUnsafeName, raw)
	}
	if raw == "" {
		return "", false, false, fmt.Errorf("%w: empty name", ErrUnsafeName)
	}
	dir = strings.HasSuffix(raw, "/")
	s := path.Clean("/" + raw) // rooted: ".." can never climb above "/"
	if c := path.Clean(raw); c == ".." || strings.HasPrefix(c, "../") || strings.Contains(c, "/../") {
		return "", false, false, fmt.Errorf("%w: %q climbs out of the archive", ErrUnsafeName, raw)
	}
	s = strings.TrimPrefix(s, "/")
	if s == "" {
		return "", true, true, nil
	}
	if len(s) > maxNameLen {
		return "", false, false, fmt.Errorf("%w: name of %d bytes", ErrUnsafeName, len(s))
	}
	for _, c := range strings.Split(s, "/") {
		if len(c) > maxComponent {
			return "", false, false, fmt.Errorf("%w: a component of %d bytes in %q", ErrUnsafeName, len(c), s)
		}
	}
	return s, dir, false, nil
}

// LinkEscapes reports whether a symlink named name (a cleaned Entry.Name)
// with this target would resolve outside the archive's root: the target
// is empty, absolute, holds a NUL, or climbs above the root with "..". A
// caller that reads a zip symlink's target with Readlink checks it with
// this; a tar's is in Entry.LinkEscapes.
func LinkEscapes(name, target string) bool { return linkEscapes(name, target) }

// linkEscapes reports whether a symlink at name pointing at target would
// resolve outside the archive's root.
func linkEscapes(name, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.IndexByte(target, 0) >= 0 {
		return true
	}
	depth := strings.Count(name, "/") // directories above the link, inside the archive
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}
