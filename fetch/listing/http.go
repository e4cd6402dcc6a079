package listing

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"rangefs/fetch"
)

// HTTPOptions configures an HTTP lister.
type HTTPOptions struct {
	Options
	// Client sends the listing requests; nil = a client with bounded timeouts that refuses to
	// dial link-local, unspecified or multicast addresses (other than the root's own). Its
	// CheckRedirect is replaced (on a copy) by this package's redirect policy.
	Client *http.Client
	// Header is sent with every listing request to the root's host (e.g. Authorization) and
	// dropped on a redirect to another host. Values are secrets: never logged.
	Header http.Header
}

// HTTP lists directories served over HTTP(S): HTML index pages (nginx, Apache, lighttpd,
// python http.server, Caddy) and nginx autoindex_format json and xml. It only ever GETs
// directory URLs: it never requests a file. Safe for concurrent use.
type HTTP struct {
	root *url.URL // ends in '/'; no fragment
	o    HTTPOptions
	hc   *http.Client
}

var _ Lister = (*HTTP)(nil)

// maxRedirects bounds the hops of one listing request.
const maxRedirects = 10

// acceptListing asks for the exact formats first; nginx answers with the one format its
// location is configured for whatever we ask, other servers with HTML.
const acceptListing = "application/json, text/xml;q=0.9, application/xml;q=0.9, text/html;q=0.8, */*;q=0.1"

// NewHTTP returns a lister rooted at rawURL, an http or https directory URL; a missing
// final '/' is added. It sends no request.
func NewHTTP(rawURL string, o HTTPOptions) (*HTTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("listing: not an http(s) URL: %s", fetch.Redact(rawURL))
	}
	u.Fragment, u.RawFragment = "", ""
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	o.Options = o.Options.withDefaults()
	h := &HTTP{root: u, o: o}
	base := o.Client
	if base == nil {
		base = defaultClient(u.Hostname())
	}
	hc := *base
	hc.CheckRedirect = redirectPolicy(u, o.Header, base.CheckRedirect)
	h.hc = &hc
	return h, nil
}

// Root returns the root URL, redacted (safe to print).
func (h *HTTP) Root() string { return fetch.Redact(h.root.String()) }

// DirURL returns the listing URL of dir: the root plus each component, escaped, and '/'.
func (h *HTTP) DirURL(dir string) (*url.URL, error) {
	parts, err := h.o.splitDir(dir)
	if err != nil {
		return nil, err
	}
	return childURL(h.root, parts, true), nil
}

// childURL appends escaped components to a directory URL (which ends in '/').
func childURL(dir *url.URL, parts []string, isDir bool) *url.URL {
	u := *dir
	var b strings.Builder
	b.WriteString(dir.EscapedPath())
	for i, p := range parts {
		b.WriteString(url.PathEscape(p))
		if i < len(parts)-1 || isDir {
			b.WriteByte('/')
		}
	}
	u.RawPath = b.String()
	u.Path, _ = url.PathUnescape(u.RawPath) // cannot fail: every part was just escaped
	return &u
}

// List reads the listing of dir. See the package doc for the formats and what is skipped.
func (h *HTTP) List(ctx context.Context, dir string) ([]Entry, error) {
	u, err := h.DirURL(dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("listing: cannot build request for %s", fetch.Redact(u.String()))
	}
	for k, vv := range h.o.Header {
		req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vv...)
	}
	req.Header.Set("Accept", acceptListing)
	if h.o.UserAgent != "" && req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", h.o.UserAgent) // a -H User-Agent wins, as for reads
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return nil, h.transportError(u, err)
	}
	defer resp.Body.Close()
	where := fetch.Redact(resp.Request.URL.String())
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: resp.StatusCode, URL: where}
	}
	body := &cappedReader{r: resp.Body, left: h.o.MaxBody, limit: h.o.MaxBody}
	br := bufio.NewReaderSize(body, 64<<10)
	base := resp.Request.URL // relative links resolve against the final URL
	var sk skips
	var es []Entry
	switch format(resp.Header.Get("Content-Type"), br) {
	case formatJSON:
		es, err = parseNginxJSON(br, u, h.o.MaxEntries, &sk)
	case formatXML:
		es, err = parseNginxXML(br, u, h.o.MaxEntries, &sk)
	case formatHTML:
		es, err = parseHTML(br, base, u, h.o.MaxEntries, &sk)
	default:
		return nil, fmt.Errorf("%w: %s answered %q", ErrNotListing, where, resp.Header.Get("Content-Type"))
	}
	if body.err != nil {
		err = body.err // the cap, whatever the parser made of the cut
	}
	if err != nil {
		if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrBadListing) {
			return nil, fmt.Errorf("%w (%s)", err, where)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("listing %s: %w", where, ctx.Err())
		}
		return nil, fmt.Errorf("listing %s: reading the answer: %w", where, err)
	}
	es = finish(es, &sk)
	sk.log(h.o.Logger, where)
	return es, nil
}

// transportError keeps the redirect refusal recognisable and no URL secret in the text.
func (h *HTTP) transportError(u *url.URL, err error) error {
	var re *redirectError
	if errors.As(err, &re) {
		return re
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("listing %s: %w", fetch.Redact(u.String()), err)
}

// StatusError is a listing request answered with a status other than 200. URL is redacted.
type StatusError struct {
	Code int
	URL  string
	// S3Code and Message are an S3 error answer's Code and Message, when it sent one.
	S3Code, Message string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("listing: HTTP %d %s from %s", e.Code, http.StatusText(e.Code), e.URL)
	if e.S3Code != "" {
		msg += ": " + e.S3Code
		if e.Message != "" {
			msg += " (" + e.Message + ")"
		}
	}
	return msg
}

// Is makes a 404 or 410 match fs.ErrNotExist: the directory is not there.
func (e *StatusError) Is(target error) bool {
	return target == iofs.ErrNotExist && (e.Code == http.StatusNotFound || e.Code == http.StatusGone)
}

type listingFormat int

const (
	formatUnknown listingFormat = iota
	formatHTML
	formatJSON
	formatXML
)

// format decides from the Content-Type, and when that is missing or generic, from the
// first bytes of the body (peeked, not consumed).
func format(contentType string, br *bufio.Reader) listingFormat {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case "application/json":
		return formatJSON
	case "text/xml", "application/xml":
		return formatXML
	case "text/html", "application/xhtml+xml":
		return formatHTML
	case "", "application/octet-stream", "text/plain":
	default:
		return formatUnknown
	}
	head, _ := br.Peek(512)
	head = bytes.TrimLeft(head, " \t\r\n\ufeff")
	switch {
	case bytes.HasPrefix(head, []byte("[")):
		return formatJSON
	case bytes.HasPrefix(head, []byte("<?xml")) && bytes.Contains(head, []byte("<list>")):
		return formatXML
	case bytes.HasPrefix(bytes.ToLower(head), []byte("<!doctype html")), bytes.HasPrefix(bytes.ToLower(head), []byte("<html")):
		return formatHTML
	}
	return formatUnknown
}

// cappedReader reads at most limit bytes; one more makes it fail with ErrTooLarge (a body
// that never ends ends here).
type cappedReader struct {
	r           io.Reader
	left, limit int64
	err         error
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.left <= 0 {
		// Probe one byte: a body of exactly limit bytes is fine.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			c.err = &limitError{what: "listing body bytes", limit: c.limit}
			return 0, c.err
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// redirectError is an ErrRedirect with its reason.
type redirectError struct{ msg string }

func (e *redirectError) Error() string        { return "listing: redirect refused: " + e.msg }
func (e *redirectError) Is(target error) bool { return target == ErrRedirect }

// redirectPolicy is the CheckRedirect of listing requests: at most maxRedirects hops, never
// the same URL twice (a loop between directories ends at once), http(s) only, no
// https-to-http downgrade, no forbidden address other than root's own; header does not
// follow to another host (net/http already drops Authorization and Cookie there). next is
// the caller's own policy, applied after ours.
func redirectPolicy(root *url.URL, header http.Header, next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	allow := rootAddr(root.Hostname())
	return func(req *http.Request, via []*http.Request) error {
		target := fetch.Redact(req.URL.String())
		if len(via) > maxRedirects {
			return &redirectError{fmt.Sprintf("more than %d redirects (last to %s)", maxRedirects, target)}
		}
		for _, v := range via {
			if v.URL.String() == req.URL.String() {
				return &redirectError{"redirect loop back to " + target}
			}
			if v.URL.Scheme == "https" && req.URL.Scheme == "http" {
				return &redirectError{"https to http downgrade (to " + target + ")"}
			}
		}
		if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
			return &redirectError{"to a non-HTTP scheme " + req.URL.Scheme}
		}
		if a, ok := forbiddenLiteral(req.URL.Hostname()); ok && a != allow {
			return &redirectError{"to the forbidden address " + a.String()}
		}
		if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
			for k := range header {
				req.Header.Del(k)
			}
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
}

// forbiddenLiteral reports whether host is an IP literal we never dial unasked: link-local
// (cloud metadata at 169.254.169.254), unspecified or multicast.
func forbiddenLiteral(host string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	a = a.Unmap().WithZone("")
	return a, a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified()
}

// rootAddr is the root's host as an address, the one forbidden address a user may ask for.
func rootAddr(host string) netip.Addr {
	a, _ := netip.ParseAddr(strings.Trim(host, "[]"))
	return a.Unmap().WithZone("")
}

// defaultClient has bounded timeouts and checks every resolved address before connecting.
func defaultClient(rootHost string) *http.Client {
	allow := rootAddr(rootHost)
	d := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
			host, _, _ := net.SplitHostPort(address)
			if a, bad := forbiddenLiteral(host); bad && a != allow {
				return &redirectError{"refusing to connect to " + a.String()}
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            d.DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{Transport: tr}
}
