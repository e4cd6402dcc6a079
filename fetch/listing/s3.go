package listing

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"rangefs/fetch"
)

// S3Options configures an S3 lister.
type S3Options struct {
	Options
	// Client sends the list requests; nil = the same bounded default as HTTP's.
	Client *http.Client
	// Endpoint is the S3 API's base URL, e.g. "http://127.0.0.1:9000" for a local MinIO;
	// "" = AWS (https://s3.REGION.amazonaws.com). A custom endpoint is addressed path style
	// (ENDPOINT/BUCKET/KEY) unless VirtualHost; AWS virtual-hosted (BUCKET.s3.REGION…/KEY),
	// or path style for a bucket name with a dot, which no wildcard certificate covers.
	Endpoint    string
	VirtualHost bool
	// Region signs the requests; "" = AWS_REGION, AWS_DEFAULT_REGION, the profile's region,
	// else us-east-1.
	Region string
	// Profile names the shared config/credentials profile; "" = AWS_PROFILE, else "default".
	Profile string
	// Anonymous sends unsigned requests and reads no credentials (a public bucket).
	// Otherwise credentials are required: the AWS environment variables, then the shared
	// files (static keys, assume-role, SSO, credential_process), then a container
	// endpoint. The EC2 instance metadata service is never asked: like fetch, this package
	// does not dial link-local addresses unasked.
	Anonymous bool
	// MaxPages caps the list pages of one directory; default MaxEntries/1000 + 10.
	MaxPages int
}

// S3 lists s3://BUCKET/PREFIX/ one "directory" (common prefix) at a time with
// ListObjectsV2 and delimiter "/". Entries carry the exact size, the mtime, the ETag and
// the object's https URL for ranged GETs; directory entries carry their s3:// URI. Safe
// for concurrent use.
type S3 struct {
	bucket, prefix string   // prefix "" or ending in '/'
	base           *url.URL // bucket base, ending in '/': keys are appended escaped
	region         string
	auth           *sigv4 // nil when anonymous
	hc             *http.Client
	o              S3Options
}

var _ Lister = (*S3)(nil)

// s3PageKeys is the page size asked for: the most S3 returns.
const s3PageKeys = 1000

// NewS3 parses uri (s3://BUCKET[/PREFIX/]) and, unless o.Anonymous, loads credentials,
// failing at once when there are none. It sends no request to the bucket.
func NewS3(ctx context.Context, uri string, o S3Options) (*S3, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("listing: want s3://BUCKET/PREFIX/, got %q", fetch.Redact(uri))
	}
	bucket := u.Host
	if strings.ContainsAny(bucket, ":/%") {
		return nil, fmt.Errorf("listing: invalid bucket name %q", bucket)
	}
	prefix := strings.TrimPrefix(u.Path, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	o.Options = o.Options.withDefaults()
	if o.MaxPages <= 0 {
		o.MaxPages = o.MaxEntries/s3PageKeys + 10
	}
	s := &S3{bucket: bucket, prefix: prefix, o: o}
	if o.Anonymous {
		s.region = firstNonEmpty(o.Region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"), "us-east-1")
	} else {
		s.auth, s.region, err = loadSigV4(ctx, o.Profile, o.Region)
		if err != nil {
			return nil, err
		}
	}
	if s.base, err = bucketBase(o.Endpoint, bucket, s.region, o.VirtualHost); err != nil {
		return nil, err
	}
	base := o.Client
	if base == nil {
		base = defaultClient(s.base.Hostname())
	}
	hc := *base
	hc.CheckRedirect = redirectPolicy(s.base, nil, base.CheckRedirect)
	s.hc = &hc
	return s, nil
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// bucketBase is the URL object keys are appended to.
func bucketBase(endpoint, bucket, region string, virtual bool) (*url.URL, error) {
	if endpoint == "" {
		if strings.Contains(bucket, ".") {
			return url.Parse("https://s3." + region + ".amazonaws.com/" + url.PathEscape(bucket) + "/")
		}
		return url.Parse("https://" + bucket + ".s3." + region + ".amazonaws.com/")
	}
	e, err := url.Parse(endpoint)
	if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.RawQuery != "" {
		return nil, fmt.Errorf("listing: S3 endpoint must be an http(s) URL, got %q", fetch.Redact(endpoint))
	}
	e.User = nil
	p := strings.TrimSuffix(e.EscapedPath(), "/") + "/"
	if virtual {
		e.Host = bucket + "." + e.Host
	} else {
		p += s3Escape(bucket) + "/"
	}
	return url.Parse(e.Scheme + "://" + e.Host + p)
}

// s3Escape escapes a key the way SigV4 canonicalises an S3 path: every byte but the
// unreserved ones (A-Z a-z 0-9 - . _ ~) and '/' as %XX. The URL then carries exactly the
// canonical path, so the signature S3 computes matches ours.
func s3Escape(key string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// ObjectURL is the https (or the endpoint's http) URL of key, for ranged GETs.
func (s *S3) ObjectURL(key string) string {
	return s.base.String() + s3Escape(key)
}

// Region is the region requests are signed for.
func (s *S3) Region() string { return s.region }

// listResult is the part of a ListObjectsV2 answer we read.
type listResult struct {
	XMLName               xml.Name `xml:"ListBucketResult"`
	IsTruncated           bool
	NextContinuationToken string
	EncodingType          string
	Contents              []struct {
		Key          string
		LastModified string
		ETag         string
		Size         int64
	}
	CommonPrefixes []struct{ Prefix string }
}

// s3Error is S3's error document.
type s3Error struct {
	Code    string
	Message string
	Region  string
}

// List lists the keys and common prefixes directly below dir.
func (s *S3) List(ctx context.Context, dir string) ([]Entry, error) {
	parts, err := s.o.splitDir(dir)
	if err != nil {
		return nil, err
	}
	prefix := s.prefix
	if len(parts) > 0 {
		prefix += dir + "/"
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	where := "s3://" + s.bucket + "/" + prefix
	var sk skips
	var out []Entry
	seen := map[string]bool{}
	token := ""
	for page := 0; ; page++ {
		if page == s.o.MaxPages {
			return nil, fmt.Errorf("%w (%s)", &limitError{what: "S3 list pages", limit: int64(s.o.MaxPages)}, where)
		}
		res, err := s.listPage(ctx, prefix, token)
		if err != nil {
			return nil, err
		}
		if err := s.addPage(&out, res, prefix, &sk); err != nil {
			return nil, fmt.Errorf("%w (%s)", err, where)
		}
		if !res.IsTruncated {
			break
		}
		token = res.NextContinuationToken
		switch {
		case token == "":
			return nil, fmt.Errorf("%w: S3 said the list is truncated but gave no continuation token (%s)", ErrBadListing, where)
		case seen[token]:
			return nil, fmt.Errorf("%w: S3 sent the same continuation token twice (%s)", ErrBadListing, where)
		}
		seen[token] = true
	}
	out = finish(out, &sk)
	sk.log(s.o.Logger, where)
	return out, nil
}

// listPage sends one ListObjectsV2 request.
func (s *S3) listPage(ctx context.Context, prefix, token string) (*listResult, error) {
	q := url.Values{}
	q.Set("list-type", "2")
	q.Set("delimiter", "/")
	q.Set("max-keys", strconv.Itoa(s3PageKeys))
	q.Set("encoding-type", "url")
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if token != "" {
		q.Set("continuation-token", token)
	}
	u := *s.base
	if u.Path != "/" {
		// Path style: GET /BUCKET?list-type=2, without the key separator.
		u.Path = strings.TrimSuffix(u.Path, "/")
		u.RawPath = strings.TrimSuffix(u.RawPath, "/")
	}
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20") // SigV4 wants %20
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("listing: cannot build request for %s", fetch.Redact(u.String()))
	}
	if s.o.UserAgent != "" && req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", s.o.UserAgent)
	}
	if err := s.SignRequest(req); err != nil {
		return nil, err
	}
	where := fetch.Redact(u.String())
	resp, err := s.hc.Do(req)
	if err != nil {
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("listing %s: %w", where, err)
	}
	defer resp.Body.Close()
	body := &cappedReader{r: resp.Body, left: s.o.MaxBody, limit: s.o.MaxBody}
	if resp.StatusCode != http.StatusOK {
		var e s3Error
		xml.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		se := &StatusError{Code: resp.StatusCode, URL: where, S3Code: printable(e.Code), Message: printable(e.Message)}
		if r := firstNonEmpty(resp.Header.Get("X-Amz-Bucket-Region"), e.Region); r != "" && r != s.region {
			se.Message = strings.TrimSpace(se.Message + " the bucket is in region " + printable(r))
		}
		return nil, se
	}
	var res listResult
	err = xml.NewDecoder(body).Decode(&res)
	if body.err != nil {
		return nil, fmt.Errorf("%w (%s)", body.err, where)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("listing %s: %w", where, ctx.Err())
		}
		return nil, fmt.Errorf("%w: ListObjectsV2 answer from %s: %v", ErrBadListing, where, err)
	}
	return &res, nil
}

// printable keeps at most 200 printable characters of server-given text.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// addPage turns one page into entries. Keys are URL-decoded when S3 says it encoded them
// (we ask it to, so keys with bytes XML cannot carry still arrive).
func (s *S3) addPage(out *[]Entry, res *listResult, prefix string, sk *skips) error {
	decode := func(k string) (string, bool) {
		if !strings.EqualFold(res.EncodingType, "url") {
			return k, true
		}
		d, err := url.QueryUnescape(k)
		return d, err == nil
	}
	add := func(e Entry) error {
		if len(*out) >= s.o.MaxEntries {
			return &limitError{what: "directory entries", limit: int64(s.o.MaxEntries)}
		}
		*out = append(*out, e)
		return nil
	}
	for _, c := range res.Contents {
		key, ok := decode(c.Key)
		if !ok || !strings.HasPrefix(key, prefix) {
			sk.add("key outside the listed prefix", c.Key)
			continue
		}
		name := key[len(prefix):]
		if name == "" {
			continue // the "folder" marker object some consoles create
		}
		if why := s3BadName(name); why != "" {
			sk.add(why, key)
			continue
		}
		if c.Size < 0 {
			sk.add("negative size", key)
			continue
		}
		mt, _ := time.Parse(time.RFC3339, c.LastModified)
		if err := add(Entry{Name: name, URL: s.ObjectURL(key), Size: c.Size, SizeExact: true,
			ModTime: mt.UTC(), ETag: c.ETag}); err != nil {
			return err
		}
	}
	for _, p := range res.CommonPrefixes {
		key, ok := decode(p.Prefix)
		if !ok || !strings.HasPrefix(key, prefix) || !strings.HasSuffix(key, "/") {
			sk.add("common prefix outside the listed prefix", p.Prefix)
			continue
		}
		name := key[len(prefix) : len(key)-1]
		if why := s3BadName(name); why != "" {
			sk.add(why, key)
			continue
		}
		if err := add(Entry{Name: name, IsDir: true, URL: "s3://" + s.bucket + "/" + key, Size: -1}); err != nil {
			return err
		}
	}
	return nil
}

// s3BadName puts every key with an empty, "." or ".." component under one reason, so a
// bucket full of them costs one warning.
func s3BadName(name string) string {
	switch why := badName(name); why {
	case "empty name", "dot name", "name contains '/'":
		return "key with an empty, \".\" or \"..\" component (a // or /./ or /../ in the key)"
	default:
		return why
	}
}
