package listing

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
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
