package listing

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// nginxItem is one element of nginx's autoindex_format json, or of its xml. Names are
// plain (JSON- or XML-escaped), not URL-escaped; sizes and mtimes are exact.
type nginxItem struct {
	Name  string `json:"name"`
	Type  string `json:"type"` // "directory", "file" or "other"
	MTime string `json:"mtime"`
	Size  *int64 `json:"size"`
}

// parseNginxJSON streams the array element by element: memory is the entries only.
func parseNginxJSON(r io.Reader, dir *url.URL, max int, sk *skips) ([]Entry, error) {
	raw := &rawBytesReader{r: r}
	dec := json.NewDecoder(raw)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("%w: nginx JSON listing is not an array", ErrBadListing)
	}
	var out []Entry
	for dec.More() {
		var it nginxItem
		if err := dec.Decode(&it); err != nil {
			return nil, jsonError(err)
		}
		if !raw.pua {
			it.Name = rawBytes(it.Name)
		}
		mt, _ := http.ParseTime(it.MTime)
		if err := addNginx(&out, it, mt, dir, max, sk); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, jsonError(err)
	}
	return out, nil
}

// nginx writes a file name into its JSON as the bytes it is, valid UTF-8 or not, and
// encoding/json turns every invalid byte into U+FFFD: "caf\xe9" and "caf\xe8" would both
// be "caf\ufffd", a name that is neither and whose URL is wrong. rawBytesReader passes
// the JSON through with each byte that is not part of valid UTF-8 written as the escape
// of a private-use rune, U+F700 plus the byte, which rawBytes turns back into the byte.
type rawBytesReader struct {
	r   io.Reader
	buf []byte // read, not yet looked at (an incomplete rune at its end)
	out []byte // looked at, not yet returned
	eof bool
	// pua: the JSON holds a real rune of U+F780..U+F7FF, which rawBytes would take for an
	// escaped byte; names are then left as encoding/json decodes them.
	pua bool
}

func (x *rawBytesReader) Read(p []byte) (int, error) {
	for len(x.out) == 0 {
		if x.eof && len(x.buf) == 0 {
			return 0, io.EOF
		}
		if !x.eof {
			var chunk [32 << 10]byte
			n, err := x.r.Read(chunk[:])
			x.buf = append(x.buf, chunk[:n]...)
			if err == io.EOF {
				x.eof = true
			} else if err != nil {
				return 0, err
			}
		}
		i := 0
		for i < len(x.buf) {
			c := x.buf[i]
			if c < utf8.RuneSelf {
				x.out = append(x.out, c)
				i++
				continue
			}
			if !x.eof && !utf8.FullRune(x.buf[i:]) {
				break // the rest of this rune comes with the next read
			}
			r, size := utf8.DecodeRune(x.buf[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				x.out = fmt.Appendf(x.out, `\u%04x`, 0xF700+int(c))
			case r >= 0xF780 && r <= 0xF7FF:
				x.pua = true
				fallthrough
			default:
				x.out = append(x.out, x.buf[i:i+size]...)
			}
			i += size
		}
		x.buf = append(x.buf[:0], x.buf[i:]...)
	}
	n := copy(p, x.out)
	x.out = x.out[n:]
	return n, nil
}

// rawBytes undoes rawBytesReader's escapes in a decoded name.
func rawBytes(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r >= 0xF780 && r <= 0xF7FF }) {
		return s
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r >= 0xF780 && r <= 0xF7FF {
			b = append(b, byte(r-0xF700))
		} else {
			b = utf8.AppendRune(b, r)
		}
	}
	return string(b)
}

func jsonError(err error) error {
	return fmt.Errorf("%w: nginx JSON listing: %v", ErrBadListing, err)
}

// parseNginxXML streams <list><file mtime= size=>name</file><directory …>…</list>.
func parseNginxXML(r io.Reader, dir *url.URL, max int, sk *skips) ([]Entry, error) {
	dec := xml.NewDecoder(r)
	var out []Entry
	sawList := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !sawList {
				return nil, fmt.Errorf("%w: XML answer has no <list> element", ErrNotListing)
			}
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: nginx XML listing: %v", ErrBadListing, err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if !sawList {
			if se.Name.Local != "list" {
				return nil, fmt.Errorf("%w: XML answer is <%s>, not an nginx <list>", ErrNotListing, se.Name.Local)
			}
			sawList = true
			continue
		}
		var el struct {
			MTime string `xml:"mtime,attr"`
			Size  *int64 `xml:"size,attr"`
			Name  string `xml:",chardata"`
		}
		if err := dec.DecodeElement(&el, &se); err != nil {
			return nil, fmt.Errorf("%w: nginx XML listing: %v", ErrBadListing, err)
		}
		it := nginxItem{Name: el.Name, Type: se.Name.Local, Size: el.Size}
		mt, _ := time.Parse(time.RFC3339, el.MTime)
		if err := addNginx(&out, it, mt, dir, max, sk); err != nil {
			return nil, err
		}
	}
}

func addNginx(out *[]Entry, it nginxItem, mt time.Time, dir *url.URL, max int, sk *skips) error {
	var isDir bool
	switch it.Type {
	case "directory":
		isDir = true
	case "file":
	default:
		sk.add("not a file or directory ("+strconv.Quote(it.Type)+")", it.Name)
		return nil
	}
	if why := badName(it.Name); why != "" {
		sk.add(why, it.Name)
		return nil
	}
	if !isDir && (it.Size == nil || *it.Size < 0) {
		sk.add("file without a size", it.Name)
		return nil
	}
	if len(*out) >= max {
		return &limitError{what: "directory entries", limit: int64(max)}
	}
	e := Entry{Name: it.Name, IsDir: isDir, URL: childURL(dir, []string{it.Name}, isDir).String(),
		Size: -1, ModTime: mt.UTC()}
	if mt.IsZero() {
		e.ModTime = time.Time{}
	}
	if !isDir {
		e.Size, e.SizeExact = *it.Size, true
	}
	*out = append(*out, e)
	return nil
}
