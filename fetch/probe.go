package fetch

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// Object is one version of a remote file, pinned at Probe: every later request is checked
// against Size, ETag and Last-Modified. It is immutable after Probe and safe for concurrent
// use; it holds the URL's secrets in unexported fields and never prints them.
type Object struct {
	Size         int64
	ETag         string // strong ETag exactly as sent (with quotes); "" when absent or weak
	WeakETag     string // the ETag as sent when it is not strong (W/"…"); "" when absent or strong
	LastModified string // as sent; "" when absent
	Date         string // the Date header of the answer that gave the validators; "" when absent
	Ranges       bool   // the server honoured a Range request (206 with a correct Content-Range)
	Name         string // suggested local file name; never "", ".", ".."; no '/', NUL or control bytes

	c       *Client
	t       *target
	rawETag string // ETag as sent, weak or strong: a weak one still detects a change
	pinned  bool   // Probe has returned this Object: later 404/410 mean "deleted"

	multi    *Mirrors // set on Mirrors.Object(): Fetch reads from the mirrors
	identity string   // overrides Identity and IdentityNoQuery when set
}

// Sources is the number of servers Fetch reads from: 1, or the mirrors of Mirrors.Object().
func (o *Object) Sources() int {
	if o.multi != nil {
		return o.multi.Len()
	}
	return 1
}

// URL returns the redacted URL (no userinfo, query values replaced): safe to log and store.
func (o *Object) URL() string { return o.t.redact }

// Identity is scheme://host/path?query with userinfo removed, scheme and host normalised:
// the cache key. It keeps the query (it may hold a secret: hash it before storing).
func (o *Object) Identity() string {
	if o.identity != "" {
		return o.identity
	}
	return identityOf(o.t.u, true)
}

// IdentityNoQuery is Identity without the query, for URLs whose query is volatile
// (presigned signatures that change on every issue).
func (o *Object) IdentityNoQuery() string {
	if o.identity != "" {
		return o.identity
	}
	return identityOf(o.t.u, false)
}

// Probe learns the size and validators of rawURL and whether the server honours ranges.
// It sends HEAD; if HEAD is refused, or lacks Content-Length or "Accept-Ranges: bytes", it
// sends "GET Range: bytes=0-0" and reads the total from Content-Range. A 200 to that GET
// gives Ranges=false (the caller decides: a plain Stream or a refusal). No size: ErrNoSize.
// A declared size is returned as is however large (the caller applies its own limit), but
// one above MaxInt64-1, which no Content-Range could address, is refused.
// 404/410: ErrGone. Transient failures are retried like Fetch.
func (c *Client) Probe(ctx context.Context, rawURL string) (*Object, error) {
	return c.probe(ctx, rawURL, false)
}

// ProbeWithoutHeaders is Probe for a URL that must not receive the Client's user headers:
// a mirror on another host, named by a Metalink or next to the URL the headers were meant
// for. Neither the Probe nor any Fetch of the Object sends them (userinfo in rawURL itself
// is still used: it is that URL's own).
func (c *Client) ProbeWithoutHeaders(ctx context.Context, rawURL string) (*Object, error) {
	return c.probe(ctx, rawURL, true)
}

func (c *Client) probe(ctx context.Context, rawURL string, noHeaders bool) (*Object, error) {
	t, err := parseTarget(rawURL, c.o.Header)
	if err != nil {
		return nil, err
	}
	t.noHeaders = noHeaders
	if c.o.ProxyURL != nil {
		t.secrets = append(t.secrets, collectSecrets(c.o.ProxyURL, nil)...)
	}
	o := &Object{c: c, t: t, Size: -1, Name: sanitizeName(path.Base(t.u.Path))}

	done, err := c.probeHead(ctx, o)
	if err != nil || done {
		return o.finish(err)
	}
	err = c.retryLoop(ctx, "probe", t, func(ctx context.Context) (bool, error) {
		return false, c.probeRange(ctx, o)
	})
	return o.finish(err)
}

func (o *Object) finish(err error) (*Object, error) {
	if err != nil {
		return nil, err
	}
	if o.Size < 0 {
		return nil, fmt.Errorf("%w (%s)", ErrNoSize, o.t.redact)
	}
	if o.Size > maxObjectSize {
		// Content-Range cannot describe its last byte in the int64 range ParseContentRange
		// accepts, so no Fetch could ever succeed: refuse now, clearly.
		return nil, fmt.Errorf("fetch: %s declares %d bytes, more than the %d this client can address",
			o.t.redact, o.Size, int64(maxObjectSize))
	}
	o.pinned = true
	o.c.o.Logger.Debug("probed", "url", o.t.redact, "size", o.Size, "ranges", o.Ranges,
		"etag", o.ETag, "last_modified", o.LastModified)
	return o, nil
}

// probeHead sends one HEAD. done reports that HEAD told everything (size and range support).
// Failures other than gone or the caller's ctx are not errors: the GET probe follows.
func (c *Client) probeHead(ctx context.Context, o *Object) (done bool, err error) {
	req, err := c.newRequest(ctx, http.MethodHead, o.t)
	if err != nil {
		return false, err
	}
	resp, err := c.do(req, o.t)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrRedirect) || permanentTransportError(err) {
			return false, err
		}
		c.o.Logger.Debug("HEAD failed; trying a ranged GET", "url", o.t.redact, "err", err.Error())
		return false, nil
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return false, o.statusError(resp)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		c.o.Logger.Debug("HEAD refused; trying a ranged GET", "url", o.t.redact, "status", resp.StatusCode)
		return false, nil
	}
	o.recordValidators(resp)
	if contentEncoding(resp) != "" {
		return false, nil // the length would be the encoded one
	}
	if resp.ContentLength >= 0 {
		o.Size = resp.ContentLength
	}
	if o.Size >= 0 && acceptsByteRanges(resp) {
		o.Ranges = true
		return true, nil
	}
	return false, nil
}

// probeRange sends "GET Range: bytes=0-0" and fills o from the answer.
func (c *Client) probeRange(ctx context.Context, o *Object) error {
	req, err := c.newRequest(ctx, http.MethodGet, o.t)
	if err != nil {
		return err
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := c.do(req, o.t)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		defer discardSmall(resp)
		if ce := contentEncoding(resp); ce != "" {
			return fmt.Errorf("%w: Content-Encoding %q on a range from %s", ErrEncoding, ce, o.t.redact)
		}
		if isMultipart(resp) {
			return fmt.Errorf("%w: multipart/byteranges answer to one range from %s", ErrBadRange, o.t.redact)
		}
		o.recordValidators(resp)
		cr := resp.Header.Get("Content-Range")
		if cr == "" {
			// A 206 without Content-Range cannot be placed at an offset: treat as no ranges.
			o.Ranges = false
			return nil
		}
		first, last, total, err := ParseContentRange(cr)
		if err != nil || first != 0 || last != 0 {
			return fmt.Errorf("%w: asked bytes 0-0, got Content-Range %q from %s", ErrBadRange, cr, o.t.redact)
		}
		o.Size, o.Ranges = total, true
		return nil
	case http.StatusOK:
		// Read nothing: the body may be the whole file (or an error page).
		resp.Body.Close()
		if ce := contentEncoding(resp); ce != "" {
			return fmt.Errorf("%w: Content-Encoding %q from %s", ErrEncoding, ce, o.t.redact)
		}
		o.recordValidators(resp)
		o.Ranges = false
		if resp.ContentLength >= 0 {
			o.Size = resp.ContentLength
		}
		if o.Size == 0 {
			// An empty file has no range to honour (Go's ServeContent answers 200 here).
			o.Ranges = true
			return nil
		}
		c.o.Logger.Warn("server ignored a Range request", "url", o.t.redact,
			"content_type", resp.Header.Get("Content-Type"), "content_length", resp.ContentLength)
		return nil
	case http.StatusRequestedRangeNotSatisfiable:
		defer discardSmall(resp)
		// The one legitimate 416 to bytes=0-0 is an empty file: "bytes */0".
		if resp.Header.Get("Content-Range") == "bytes */0" {
			o.recordValidators(resp)
			o.Size, o.Ranges = 0, true
			return nil
		}
		return o.statusError(resp)
	default:
		defer discardSmall(resp)
		return o.statusError(resp)
	}
}

// recordValidators pins ETag and Last-Modified from resp (overwriting earlier ones: the
// ranged GET is what later Fetches will be compared with).
func (o *Object) recordValidators(resp *http.Response) {
	o.rawETag = resp.Header.Get("Etag")
	o.ETag, o.WeakETag = "", o.rawETag
	if isStrongETag(o.rawETag) {
		o.ETag, o.WeakETag = o.rawETag, ""
	}
	o.LastModified = resp.Header.Get("Last-Modified")
	o.Date = resp.Header.Get("Date")
	if cd := resp.Header.Get("Content-Disposition"); cd != "" {
		if _, params, err := mime.ParseMediaType(cd); err == nil {
			if n := sanitizeName(params["filename"]); n != fallbackName {
				o.Name = n
			}
		}
	}
}

func isStrongETag(e string) bool {
	return len(e) >= 2 && e[0] == '"' && e[len(e)-1] == '"'
}

// ifRange is the validator sent in If-Range: the strong ETag, else Last-Modified. A weak
// ETag is never used there (RFC 9110 §13.1.5 forbids it).
func (o *Object) ifRange() string {
	if o.ETag != "" {
		return o.ETag
	}
	return o.LastModified
}

// changedBy reports how resp's validators differ from the pinned ones ("" when they don't).
// A validator absent on either side is not evidence.
func (o *Object) changedBy(resp *http.Response) string {
	if e := resp.Header.Get("Etag"); e != "" && o.rawETag != "" && e != o.rawETag {
		return fmt.Sprintf("ETag %s, pinned %s", e, o.rawETag)
	}
	if lm := resp.Header.Get("Last-Modified"); lm != "" && o.LastModified != "" && lm != o.LastModified {
		t1, err1 := http.ParseTime(lm)
		t2, err2 := http.ParseTime(o.LastModified)
		if err1 != nil || err2 != nil || !t1.Equal(t2) {
			return fmt.Sprintf("Last-Modified %s, pinned %s", lm, o.LastModified)
		}
	}
	return ""
}

// statusError builds the typed error for an unexpected status, with Retry-After parsed.
func (o *Object) statusError(resp *http.Response) *StatusError {
	return &StatusError{
		Code:       resp.StatusCode,
		URL:        o.t.redact,
		retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now(), o.c.o.RetryAfterCap),
		pinned:     o.pinned,
	}
}

// contentEncoding returns the response's Content-Encoding unless it is absent or identity.
func contentEncoding(resp *http.Response) string {
	ce := strings.TrimSpace(strings.Join(resp.Header.Values("Content-Encoding"), ","))
	if ce == "" || strings.EqualFold(ce, "identity") {
		return ""
	}
	return ce
}

func isMultipart(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return strings.HasPrefix(mt, "multipart/")
}

func acceptsByteRanges(resp *http.Response) bool {
	for _, v := range resp.Header.Values("Accept-Ranges") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "bytes") {
				return true
			}
		}
	}
	return false
}

// fallbackName is the file name used when the URL and headers suggest none usable.
const fallbackName = "download"

// maxNameBytes keeps names within common file system limits.
const maxNameBytes = 255

// sanitizeName turns a suggested name into one that is safe as a single path element in a
// directory we control: base name only, no control bytes or NUL, no "." or "..", valid UTF-8.
func sanitizeName(s string) string {
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError, r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
			continue
		}
		if b.Len()+utf8.RuneLen(r) > maxNameBytes {
			break
		}
		b.WriteRune(r)
	}
	s = strings.TrimSpace(b.String())
	if s == "" || s == "." || s == ".." {
		return fallbackName
	}
	return s
}
