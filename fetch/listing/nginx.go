package listing

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// nginxItem is one element of nginx's autoindex_format json, or of its xml. Names are
// plain (JSON- or XML-escaped), not URL-escaped; sizes and mtimes are exact.
type nginxItem struct {
	Name  string `json:"-"`
	Type  string `json:"type"` // "directory", "file" or "other"
	MTime string `json:"mtime"`
	Size  *int64 `json:"size"`
	// RawName is the JSON of the name, for unquoteJSONName.
	RawName json.RawMessage `json:"name"`
}

// parseNginxJSON streams the array element by element: memory is the entries only.
func parseNginxJSON(r io.Reader, dir *url.URL, max int, sk *skips) ([]Entry, error) {
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("%w: nginx JSON listing is not an array", ErrBadListing)
	}
	var out []Entry
	for dec.More() {
		var it nginxItem
		if err := dec.Decode(&it); err != nil {
			return nil, jsonError(err)
		}
		name, err := unquoteJSONName(it.RawName)
		if err != nil {
			return nil, jsonError(err)
		}
		it.Name = name
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
// encoding/json turns every invalid byte of a string into U+FFFD: "caf\xe9" and "caf\xe8"
// would both be "caf\ufffd", a name that is neither and whose URL is wrong. So the name
// is taken as raw JSON and unquoted here, keeping the bytes that are not escapes.
func unquoteJSONName(raw json.RawMessage) (string, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", fmt.Errorf("name %.40s is not a string", raw)
	}
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		return string(in), nil
	}
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(in) {
			return "", errors.New("name ends in a backslash")
		}
		i++
		switch in[i] {
		case '"', '\\', '/':
			out = append(out, in[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(in[i+1:])
			if !ok {
				return "", errors.New("name has a bad \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+6 < len(in) && in[i+1] == '\\' && in[i+2] == 'u' {
					r2, ok = hex4(in[i+3:])
				}
				if d := utf16.DecodeRune(r, r2); ok && d != utf8.RuneError {
					r, i = d, i+6
				} else {
					r = utf8.RuneError // a lone surrogate, as encoding/json reads it
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", fmt.Errorf("name has the escape \\%c", in[i])
		}
	}
	return string(out), nil
}

// hex4 reads the 4 hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(v), err == nil
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
