// Package metalink reads Metalink 4 documents (RFC 5854, ".meta4"): for each file its name,
// size, mirrors (url elements, by priority), whole-file SHA-256 and SHA-256 piece hashes.
// It only parses; it never fetches. It imports the standard library only.
//
// Parse is strict where a mistake would cost integrity (a malformed hash, pieces that do not
// cover the size exactly) and lenient where it would not: URLs of schemes other than http
// and https, hash types other than SHA-256 and unknown elements are skipped, and counted
// in File.Skipped so the caller can say so.
package metalink

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Namespace is the XML namespace of RFC 5854.
const Namespace = "urn:ietf:params:xml:ns:metalink"

// MaxDocument bounds the bytes Parse reads: a Metalink of a 1 TiB file in 1 MiB pieces is
// about 70 MiB of hex, so 128 MiB leaves room and still refuses an endless stream.
const MaxDocument = 128 << 20

// maxURLs bounds the mirrors kept per file.
const maxURLs = 1000

// Metalink is a parsed document.
type Metalink struct {
	Files []File
}

// File is one <file> element.
type File struct {
	Name   string // the name attribute as written (a path; the caller makes it safe)
	Size   int64  // -1 when absent
	SHA256 string // whole-file hash, lower-case hex; "" when absent
	Pieces *Pieces
	URLs   []URL // http(s) only, best (lowest priority value) first, document order among equals
	// Skipped names what was ignored: "url ftp://…", "hash md5", "pieces sha-1".
	Skipped []string
}

// Pieces are the SHA-256 hashes of consecutive pieces of Length bytes (the last may be
// shorter).
type Pieces struct {
	Length int64
	SHA256 [][32]byte
}

// URL is one mirror.
type URL struct {
	URL      string
	Priority int    // 1 is the most preferred; absent = 999999
	Location string // ISO 3166-1 country code, informational
}

// noPriority sorts URLs without a priority after every URL with one.
const noPriority = 999999

// The XML shapes, namespace-qualified.
type xmlMetalink struct {
	XMLName xml.Name  `xml:"metalink"`
	Files   []xmlFile `xml:"file"`
}

type xmlFile struct {
	Name   string      `xml:"name,attr"`
	Size   *string     `xml:"size"`
	Hashes []xmlHash   `xml:"hash"`
	Pieces []xmlPieces `xml:"pieces"`
	URLs   []xmlURL    `xml:"url"`
}

type xmlHash struct {
	Type  string `xml:"type,attr"`
	Value string `xml:",chardata"`
}

type xmlPieces struct {
	Length string   `xml:"length,attr"`
	Type   string   `xml:"type,attr"`
	Hashes []string `xml:"hash"`
}

type xmlURL struct {
	Priority string `xml:"priority,attr"`
	Location string `xml:"location,attr"`
	Value    string `xml:",chardata"`
}

// Parse reads one Metalink 4 document.
func Parse(r io.Reader) (*Metalink, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("metalink: %w", err)
	}
	if len(data) > MaxDocument {
		return nil, fmt.Errorf("metalink: document larger than %d MiB", MaxDocument>>20)
	}
	var doc xmlMetalink
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	if err := dec.Decode(&doc); err != nil {
		if bytes.Contains(data, []byte("http://www.metalinker.org/")) {
			return nil, errors.New("metalink: this is a Metalink 3 (.metalink) document; only Metalink 4 (RFC 5854, .meta4) is read")
		}
		return nil, fmt.Errorf("metalink: not a Metalink 4 document: %w", err)
	}
	if doc.XMLName.Space != Namespace {
		if doc.XMLName.Space == "http://www.metalinker.org/" {
			return nil, errors.New("metalink: this is a Metalink 3 (.metalink) document; only Metalink 4 (RFC 5854, .meta4) is read")
		}
		return nil, fmt.Errorf("metalink: root element is in namespace %q, not %q", doc.XMLName.Space, Namespace)
	}
	if len(doc.Files) == 0 {
		return nil, errors.New("metalink: no <file> element")
	}
	m := &Metalink{}
	for i, xf := range doc.Files {
		f, err := parseFile(xf)
		if err != nil {
			return nil, fmt.Errorf("metalink: file %d (%q): %w", i+1, xf.Name, err)
		}
		m.Files = append(m.Files, f)
	}
	return m, nil
}

func parseFile(xf xmlFile) (File, error) {
	f := File{Name: strings.TrimSpace(xf.Name), Size: -1}
	if f.Name == "" {
		return f, errors.New("the file has no name attribute")
	}
	if xf.Size != nil {
		n, err := strconv.ParseInt(strings.TrimSpace(*xf.Size), 10, 64)
		if err != nil || n < 0 {
			return f, fmt.Errorf("size %q is not a byte count", *xf.Size)
		}
		f.Size = n
	}
	for _, h := range xf.Hashes {
		if !strings.EqualFold(strings.TrimSpace(h.Type), "sha-256") {
			f.Skipped = append(f.Skipped, "hash "+h.Type)
			continue
		}
		sum, err := parseHash(h.Value)
		if err != nil {
			return f, fmt.Errorf("file hash: %w", err)
		}
		if f.SHA256 != "" && f.SHA256 != hex.EncodeToString(sum[:]) {
			return f, errors.New("two different sha-256 file hashes")
		}
		f.SHA256 = hex.EncodeToString(sum[:])
	}
	for _, p := range xf.Pieces {
		if !strings.EqualFold(strings.TrimSpace(p.Type), "sha-256") {
			f.Skipped = append(f.Skipped, "pieces "+p.Type)
			continue
		}
		if f.Pieces != nil {
			return f, errors.New("two sha-256 <pieces> elements")
		}
		ps, err := parsePieces(p, f.Size)
		if err != nil {
			return f, err
		}
		f.Pieces = ps
	}
	for _, u := range xf.URLs {
		raw := strings.TrimSpace(u.Value)
		pu, err := url.Parse(raw)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			f.Skipped = append(f.Skipped, "url "+redactForNote(raw))
			continue
		}
		prio := noPriority
		if s := strings.TrimSpace(u.Priority); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > noPriority {
				return f, fmt.Errorf("url priority %q is not a number from 1 to %d", u.Priority, noPriority)
			}
			prio = n
		}
		if len(f.URLs) == maxURLs {
			f.Skipped = append(f.Skipped, fmt.Sprintf("urls beyond the first %d", maxURLs))
			break
		}
		f.URLs = append(f.URLs, URL{URL: raw, Priority: prio, Location: strings.TrimSpace(u.Location)})
	}
	sort.SliceStable(f.URLs, func(i, j int) bool { return f.URLs[i].Priority < f.URLs[j].Priority })
	if len(f.URLs) == 0 {
		return f, errors.New("no http or https <url>")
	}
	return f, nil
}

// parsePieces checks that the hashes cover size exactly in pieces of the given length.
func parsePieces(p xmlPieces, size int64) (*Pieces, error) {
	length, err := strconv.ParseInt(strings.TrimSpace(p.Length), 10, 64)
	if err != nil || length <= 0 {
		return nil, fmt.Errorf("pieces length %q is not a positive byte count", p.Length)
	}
	if size < 0 {
		return nil, errors.New("<pieces> without a <size>: the pieces cannot be placed")
	}
	want := (size + length - 1) / length
	if int64(len(p.Hashes)) != want {
		return nil, fmt.Errorf("%d piece hashes for %d bytes in pieces of %d; want %d", len(p.Hashes), size, length, want)
	}
	ps := &Pieces{Length: length, SHA256: make([][32]byte, len(p.Hashes))}
	for i, h := range p.Hashes {
		if ps.SHA256[i], err = parseHash(h); err != nil {
			return nil, fmt.Errorf("piece %d: %w", i, err)
		}
	}
	return ps, nil
}

func parseHash(s string) ([32]byte, error) {
	var h [32]byte
	t := strings.TrimSpace(s)
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("%q is not a sha-256 (64 hex digits)", shorten(t))
	}
	copy(h[:], b)
	return h, nil
}

// redactForNote keeps a skipped URL's scheme and host only: its path or query may hold a token.
func redactForNote(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(unparseable)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
