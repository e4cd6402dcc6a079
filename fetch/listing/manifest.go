package listing

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unsafe"
)

// Manifest is a tree read from a manifest: one file per line,
//
//	PATH<TAB>URL[<TAB>SIZE[<TAB>SHA256]]
//
// where PATH is slash-separated below the mount root (a leading '/' is ignored), URL is an
// absolute http(s) URL, SIZE is a decimal byte count ("" or "-" when unknown) and SHA256
// 64 hex digits. Blank lines and lines starting with '#' are comments. Directories are
// implied by the paths. A path with an empty, "." or ".." component or a NUL is skipped
// with a warning; a path given twice keeps its first line; a name that is both a file and
// a directory is a directory. A malformed line (no URL, a URL that is not http(s), a bad
// size or digest, more than four fields, a line over 64 KiB) fails the whole manifest with
// its line number: nothing is half-loaded.
//
// Built for a million lines: the text of all lines lives in a few large strings and each
// file costs one 24-byte record besides its text, with no per-entry map or pointer. List
// returns substrings of that text (no copies). A Manifest is immutable and safe for
// concurrent use; List makes no request.
type Manifest struct {
	text []string // the arena: path, URL and digest text of every kept line, in 1 MiB chunks
	recs []record // sorted by path; for equal paths (dropped at parse) by line order
}

var _ Lister = (*Manifest)(nil)

// record is one file. Its text is text[chunk][off:], path then URL then (if hasSHA) the
// 64-digit digest.
type record struct {
	chunk, off uint32
	plen       uint32
	ulen       uint32 // high bit: a digest follows the URL
	size       int64  // -1 when unknown
}

const (
	hasSHABit       = 1 << 31
	arenaChunk      = 1 << 20
	maxManifestLine = 64 << 10
)

func (m *Manifest) path(r *record) string {
	return m.text[r.chunk][r.off : r.off+r.plen]
}

func (m *Manifest) entry(r *record, name string) Entry {
	t := m.text[r.chunk]
	u := r.off + r.plen
	ul := r.ulen &^ hasSHABit
	e := Entry{Name: name, URL: t[u : u+ul], Size: r.size, SizeExact: r.size >= 0}
	if r.ulen&hasSHABit != 0 {
		e.SHA256 = t[u+ul : u+ul+64]
	}
	return e
}

// memBytes is the memory the Manifest holds: its text and its records.
func (m *Manifest) memBytes() int64 {
	n := int64(cap(m.recs)) * int64(unsafe.Sizeof(record{}))
	for _, t := range m.text {
		n += int64(len(t))
	}
	return n
}

// Len is the number of files.
func (m *Manifest) Len() int { return len(m.recs) }

// ParseManifest reads a manifest from r. name is how warnings and errors call it (a file
// name). Only o.Logger is used; the listing bounds do not apply to the user's own file.
func ParseManifest(r io.Reader, name string, o Options) (*Manifest, error) {
	o = o.withDefaults()
	p := manifestParser{br: bufio.NewReaderSize(r, maxManifestLine), buf: make([]byte, 0, arenaChunk)}
	if err := p.run(); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	m := &Manifest{text: p.text, recs: p.recs}
	slices.SortFunc(m.recs, func(a, b record) int {
		if c := strings.Compare(m.path(&a), m.path(&b)); c != 0 {
			return c
		}
		if a.chunk != b.chunk {
			return int(a.chunk) - int(b.chunk)
		}
		return int(a.off) - int(b.off)
	})
	out := m.recs[:0]
	for i := range m.recs {
		path := m.path(&m.recs[i])
		if n := len(out); n > 0 && m.path(&out[n-1]) == path {
			p.sk.add("path given twice: the first line wins", path)
			continue
		}
		// A file and a directory of one name: the directory wins. The directory's
		// records sort after the file, so look ahead.
		if lo, hi := m.subtree(path, i+1, len(m.recs)); lo < hi {
			p.sk.add("a file and a directory of one name: the directory wins", path)
			continue
		}
		out = append(out, m.recs[i])
	}
	m.recs = slices.Clip(out)
	p.sk.log(o.Logger, name)
	return m, nil
}

type manifestParser struct {
	br   *bufio.Reader
	buf  []byte // the arena chunk being filled
	text []string
	recs []record
	sk   skips
	line int
}

func (p *manifestParser) run() error {
	for {
		raw, err := p.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("line %d is longer than %d bytes", p.line+1, maxManifestLine)
		}
		if len(raw) > 0 {
			p.line++
			if perr := p.parseLine(raw); perr != nil {
				return fmt.Errorf("line %d: %w", p.line, perr)
			}
		}
		if err == io.EOF {
			if len(p.buf) > 0 {
				p.text = append(p.text, string(p.buf))
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var errManifestSyntax = errors.New("want PATH<TAB>URL[<TAB>SIZE[<TAB>SHA256]]")

func (p *manifestParser) parseLine(line []byte) error {
	line = bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
		return nil
	}
	var f [4][]byte
	n := 0
	for rest := line; ; n++ {
		if n == len(f) {
			return fmt.Errorf("more than four tab-separated fields: %w", errManifestSyntax)
		}
		i := bytes.IndexByte(rest, '\t')
		if i < 0 {
			f[n] = rest
			n++
			break
		}
		f[n], rest = rest[:i], rest[i+1:]
	}
	if n < 2 {
		return fmt.Errorf("no URL: %w", errManifestSyntax)
	}
	path, rawURL := bytes.TrimPrefix(f[0], []byte("/")), f[1]
	if err := checkManifestURL(rawURL); err != nil {
		return err
	}
	size := int64(-1)
	if n > 2 && len(f[2]) > 0 && string(f[2]) != "-" {
		v, err := strconv.ParseInt(string(f[2]), 10, 64)
		if err != nil || v < 0 || f[2][0] == '+' {
			return fmt.Errorf("size %q is not a byte count", f[2])
		}
		size = v
	}
	var sha []byte
	if n > 3 && len(f[3]) > 0 {
		if len(f[3]) != 64 || !allHex(f[3]) {
			return fmt.Errorf("SHA256 %q is not 64 hex digits", f[3])
		}
		sha = f[3]
	}
	if why := badPath(path); why != "" {
		p.sk.add(why, "line "+strconv.Itoa(p.line)+": "+string(path))
		return nil
	}
	need := len(path) + len(rawURL) + len(sha)
	if len(p.buf)+need > cap(p.buf) {
		p.text = append(p.text, string(p.buf))
		p.buf = p.buf[:0]
	}
	r := record{chunk: uint32(len(p.text)), off: uint32(len(p.buf)), plen: uint32(len(path)),
		ulen: uint32(len(rawURL)), size: size}
	p.buf = append(p.buf, path...)
	p.buf = append(p.buf, rawURL...)
	if sha != nil {
		r.ulen |= hasSHABit
		for _, c := range sha {
			if 'A' <= c && c <= 'F' {
				c += 'a' - 'A'
			}
			p.buf = append(p.buf, c)
		}
	}
	p.recs = append(p.recs, r)
	return nil
}

// badPath checks every component of a manifest path.
func badPath(path []byte) string {
	if len(path) == 0 {
		return "empty name"
	}
	for rest := path; ; {
		i := bytes.IndexByte(rest, '/')
		comp := rest
		if i >= 0 {
			comp = rest[:i]
		}
		switch {
		case len(comp) == 0:
			return "empty name"
		case string(comp) == "." || string(comp) == "..":
			return "dot name"
		case bytes.IndexByte(comp, 0) >= 0:
			return "name contains NUL"
		}
		if i < 0 {
			return ""
		}
		rest = rest[i+1:]
	}
}

// checkManifestURL accepts an absolute http(s) URL with a host and no space or control
// byte. The full parse happens when the file is opened.
func checkManifestURL(u []byte) error {
	var rest []byte
	switch {
	case len(u) >= 7 && bytes.EqualFold(u[:7], []byte("http://")):
		rest = u[7:]
	case len(u) >= 8 && bytes.EqualFold(u[:8], []byte("https://")):
		rest = u[8:]
	default:
		return fmt.Errorf("URL %q is not an http(s) URL", truncate(u))
	}
	if len(rest) == 0 || rest[0] == '/' {
		return fmt.Errorf("URL %q has no host", truncate(u))
	}
	for _, c := range u {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("URL %q contains a space or control byte", truncate(u))
		}
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

func allHex(b []byte) bool {
	for _, c := range b {
		if !isHex(c) {
			return false
		}
	}
	return true
}

// List returns one level of the tree. A dir that is a file is ErrNotDir, one that is not
// there matches fs.ErrNotExist. ctx is unused: List only reads memory.
func (m *Manifest) List(_ context.Context, dir string) ([]Entry, error) {
	if _, err := (Options{MaxDepth: 1 << 30}).splitDir(dir); err != nil {
		return nil, err
	}
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	lo, hi := m.subtree(dir, 0, len(m.recs))
	if lo == hi && dir != "" {
		i := sort.Search(len(m.recs), func(i int) bool { return m.path(&m.recs[i]) >= dir })
		if i < len(m.recs) && m.path(&m.recs[i]) == dir {
			return nil, fmt.Errorf("manifest: %q: %w", dir, ErrNotDir)
		}
		return nil, fmt.Errorf("manifest: %q: %w", dir, iofs.ErrNotExist)
	}
	var es []Entry
	for i := lo; i < hi; {
		r := &m.recs[i]
		rest := m.path(r)[len(prefix):]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			es = append(es, m.entry(r, rest))
			i++
			continue
		}
		es = append(es, Entry{Name: rest[:j], IsDir: true, Size: -1})
		_, i = m.subtree(m.path(r)[:len(prefix)+j], i, hi) // skip the whole subdirectory
	}
	// Parse removed duplicate paths and file-directory clashes, so names are unique; sort
	// them, since "a/…" sorts after "a.txt" in path order but "a" is before it by name.
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return es, nil
}

// subtree returns the range of records in [from, to) below the directory dir ("" is the
// root): paths that start with dir+"/". Paths with a common prefix are contiguous once
// sorted, and they end before dir+"0" ('0' is the byte after '/'). No string is built: a
// million-line parse calls this once per line.
func (m *Manifest) subtree(dir string, from, to int) (lo, hi int) {
	if dir == "" {
		return from, to
	}
	lo = from + sort.Search(to-from, func(i int) bool { return cmpJoined(m.path(&m.recs[from+i]), dir, '/') >= 0 })
	hi = lo + sort.Search(to-lo, func(i int) bool { return cmpJoined(m.path(&m.recs[lo+i]), dir, '0') >= 0 })
	return lo, hi
}

// cmpJoined compares s with p+string(c) as strings.Compare would.
func cmpJoined(s, p string, c byte) int {
	n := min(len(s), len(p))
	if r := strings.Compare(s[:n], p[:n]); r != 0 {
		return r
	}
	switch {
	case len(s) <= len(p):
		return -1 // s is a prefix of p, so shorter than p+c
	case s[len(p)] < c:
		return -1
	case s[len(p)] > c:
		return 1
	case len(s) > len(p)+1:
		return 1
	}
	return 0
}
