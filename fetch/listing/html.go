package listing

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// maxTokenBytes bounds one HTML token (a tag with its attributes, or a run of text), so a
// hostile page cannot make the tokenizer buffer grow without end.
const maxTokenBytes = 1 << 20

// maxTailBytes is how much text after a link is kept to find its size and date hints.
const maxTailBytes = 512

// link is an <a href> being read, with the row text that follows it.
type link struct {
	href    string
	tail    strings.Builder
	mtime   time.Time // from <time datetime=…> in the row (Caddy)
	size    int64     // from a data-size / data-order attribute in the row (Caddy); -1 if none
	hasSize bool
}

// htmlPage turns the links of one index page into entries.
type htmlPage struct {
	base    *url.URL // the page's final URL
	listDir *url.URL // the URL List requested, for directory entries' URLs
	dir     []string // decoded path components of base's directory
	max     int
	sk      *skips
	out     []Entry
}

// parseHTML reads an index page with the x/net/html tokenizer. The page is streamed: memory
// is the entries, never the page. Rows are cut at <tr>, <li> and the next <a>, which covers
// nginx's <pre> lines, Apache's and lighttpd's tables, python's list and Caddy's table.
func parseHTML(r io.Reader, base, listDir *url.URL, max int, sk *skips) ([]Entry, error) {
	p := &htmlPage{base: base, listDir: listDir, dir: dirComponents(base), max: max, sk: sk}
	z := html.NewTokenizer(r)
	z.SetMaxBuf(maxTokenBytes)
	var cur *link
	inAnchor := false
	flush := func() error {
		if cur != nil {
			err := p.add(cur)
			cur = nil
			return err
		}
		return nil
	}
	for {
		switch z.Next() {
		case html.ErrorToken:
			err := z.Err()
			if err == io.EOF {
				return p.out, flush()
			}
			if errors.Is(err, html.ErrBufferExceeded) {
				return nil, fmt.Errorf("%w: an HTML token is longer than %d bytes", ErrBadListing, maxTokenBytes)
			}
			return nil, err
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			var attrs map[string]string
			if hasAttr {
				attrs = readAttrs(z)
			}
			switch atom.Lookup(name) {
			case atom.A:
				if err := flush(); err != nil {
					return nil, err
				}
				if href, ok := attrs["href"]; ok {
					cur = &link{href: href, size: -1}
					inAnchor = true
				}
			case atom.Tr, atom.Li:
				if err := flush(); err != nil {
					return nil, err
				}
			case atom.Time:
				if cur != nil {
					if t, err := time.Parse(time.RFC3339, attrs["datetime"]); err == nil {
						cur.mtime = t.UTC()
					}
				}
			}
			if cur != nil && !cur.hasSize {
				for _, k := range []string{"data-size", "data-order"} {
					if n, err := strconv.ParseInt(attrs[k], 10, 64); err == nil && n >= 0 {
						cur.size, cur.hasSize = n, true
						break
					}
				}
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			switch atom.Lookup(name) {
			case atom.A:
				inAnchor = false
			case atom.Tr, atom.Li, atom.Table, atom.Tbody, atom.Pre, atom.Ul, atom.Ol:
				if err := flush(); err != nil {
					return nil, err
				}
			}
		case html.TextToken:
			if cur != nil && !inAnchor && cur.tail.Len() < maxTailBytes {
				t := z.Text()
				if len(t) > maxTailBytes-cur.tail.Len() {
					t = t[:maxTailBytes-cur.tail.Len()]
				}
				cur.tail.Write(t)
				cur.tail.WriteByte(' ')
			}
		}
	}
}

// readAttrs copies the tag's attributes (keys lowercased by the tokenizer); the first of a
// repeated key wins, as in browsers.
func readAttrs(z *html.Tokenizer) map[string]string {
	m := make(map[string]string, 4)
	for {
		k, v, more := z.TagAttr()
		if _, seen := m[string(k)]; !seen {
			m[string(k)] = string(v)
		}
		if !more {
			return m
		}
	}
}

// add turns one link into an entry, or counts why it was skipped. Query and fragment links
// (Apache's ?C=N;O=D sort links, anchors) are dropped silently, as are links to the
// directory itself or to its ancestors (every index page has one); links elsewhere are
// counted and warned about once.
func (p *htmlPage) add(l *link) error {
	href := strings.TrimSpace(l.href)
	if href == "" || strings.ContainsAny(href, "?#") {
		return nil
	}
	ref, err := url.Parse(href)
	if err != nil {
		// Some servers print a literal '%' unescaped: read it as itself.
		ref, err = url.Parse(escapeStrayPercent(href))
		if err != nil {
			p.sk.add("unparseable link", href)
			return nil
		}
	}
	u := p.base.ResolveReference(ref)
	if !sameOrigin(u, p.base) {
		p.sk.add("link to another origin", href)
		return nil
	}
	parts, isDir, err := pathComponents(u.EscapedPath())
	if err != nil {
		p.sk.add("bad escape in link", href)
		return nil
	}
	if len(parts) <= len(p.dir) || !hasPrefix(parts, p.dir) {
		if !hasPrefix(p.dir, parts) { // ancestors and the directory itself are no news
			p.sk.add("link outside the directory", href)
		}
		return nil
	}
	if len(parts) > len(p.dir)+1 {
		p.sk.add("link below a subdirectory", href)
		return nil
	}
	name := parts[len(p.dir)]
	if why := badName(name); why != "" {
		p.sk.add(why, name)
		return nil
	}
	if len(p.out) >= p.max {
		return &limitError{what: "directory entries", limit: int64(p.max)}
	}
	e := Entry{Name: name, IsDir: isDir, Size: -1, ModTime: l.mtime}
	if isDir {
		e.URL = childURL(p.listDir, []string{name}, true).String()
	} else {
		e.URL = u.String()
		hintSize, hintTime := parseHints(l.tail.String())
		if l.hasSize {
			e.Size = l.size
		} else {
			e.Size = hintSize
		}
		if e.ModTime.IsZero() {
			e.ModTime = hintTime
		}
	}
	if isDir && e.ModTime.IsZero() {
		_, e.ModTime = parseHints(l.tail.String())
	}
	p.out = append(p.out, e)
	return nil
}

// escapeStrayPercent escapes each '%' that does not start a valid %XX escape.
func escapeStrayPercent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && !(i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2])) {
			b.WriteString("%25")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// sameOrigin compares scheme, host and port (an omitted port is the scheme's default).
func sameOrigin(a, b *url.URL) bool {
	return a.Scheme == b.Scheme && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// pathComponents splits an escaped absolute path into decoded components, cutting on the
// literal '/' only (so an escaped %2F stays inside its component, where badName sees it).
// isDir reports a final '/'.
func pathComponents(escaped string) (parts []string, isDir bool, err error) {
	escaped = strings.TrimPrefix(escaped, "/")
	if escaped == "" {
		return nil, true, nil
	}
	isDir = strings.HasSuffix(escaped, "/")
	escaped = strings.TrimSuffix(escaped, "/")
	for _, s := range strings.Split(escaped, "/") {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, false, err
		}
		parts = append(parts, d)
	}
	return parts, isDir, nil
}

// dirComponents is the decoded directory of u: its path up to the last '/'.
func dirComponents(u *url.URL) []string {
	p := u.EscapedPath()
	p = p[:strings.LastIndexByte(p, '/')+1]
	parts, _, _ := pathComponents(p)
	return parts
}

func hasPrefix(s, prefix []string) bool {
	if len(prefix) > len(s) {
		return false
	}
	for i := range prefix {
		if s[i] != prefix[i] {
			return false
		}
	}
	return true
}
