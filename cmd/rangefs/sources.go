package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"rangefs/cache"
	"rangefs/fetch"
	"rangefs/fetch/listing"
	"rangefs/fs"
)

// source is one thing the mount shows: a file given by URL (probed, its
// cache open, as mounts have always done) or a directory (a listing URL, an
// S3 prefix or a manifest), listed lazily.
type source struct {
	name string // in the mount's root, when there are several
	what string // the redacted URL or manifest path it came from
	file fs.File
	dir  fs.Dir
}

// resolveSources decides what each argument is and opens the caches of the
// files among them; the caller closes the returned caches, also on error.
//
// A URL ending in '/' is a directory. Any other URL is probed; a probe that
// fails in a way an index page does (no size, ranges ignored, an encoded
// body) is tried as a listing, and a URL that is neither a file nor a
// listing fails with both reasons and what to do.
func resolveSources(ctx context.Context, c *mountConfig, t *treeCtx, pool *cache.Pool, probes map[string]probeResult, stderr io.Writer) ([]source, []*cache.File, error) {
	var files []*cache.File
	srcs := make([]source, 0, len(c.Args)+1)
	taken := map[string]bool{}
	for _, a := range c.Args {
		if strings.HasPrefix(strings.ToLower(a), "s3://") {
			d, err := s3Dir(ctx, c, t, a)
			if err != nil {
				return nil, files, err
			}
			srcs = append(srcs, source{name: uniqueName(taken, dirName(a)), what: fetch.Redact(a), dir: d})
			continue
		}
		if isDirURL(a) {
			d, err := httpDir(ctx, c, t, a)
			if err != nil {
				return nil, files, err
			}
			srcs = append(srcs, source{name: uniqueName(taken, dirName(a)), what: fetch.Redact(a), dir: d})
			continue
		}
		p := probes[a]
		f, err := mountFile(ctx, c, pool, t, a, p.obj, p.err)
		if err != nil {
			if !maybeListing(err) || isMetalinkArg(a) || len(c.Sources.Mirrors) > 0 || c.Sources.Metalink != "" {
				return nil, files, err
			}
			d, lerr := httpDir(ctx, c, t, a)
			if lerr != nil {
				return nil, files, neitherError(a, err, lerr)
			}
			srcs = append(srcs, source{name: uniqueName(taken, dirName(a)), what: fetch.Redact(a), dir: d})
			continue
		}
		files = append(files, f)
		if why := f.Discarded(); why != "" && !c.Quiet {
			fmt.Fprintf(stderr, "rangefs: %s: discarded its cached data (%s)\n", p.obj.URL(), why)
		}
		name := p.obj.Name
		if c.Name != "" {
			name = c.Name
		}
		srcs = append(srcs, source{name: uniqueName(taken, safeName(name)), what: p.obj.URL(),
			file: fs.CacheFile(f, lastModified(p.obj))})
	}
	if c.Manifest != "" {
		d, err := manifestDir(c, t)
		if err != nil {
			return nil, files, err
		}
		name := strings.TrimSuffix(filepath.Base(c.Manifest), filepath.Ext(c.Manifest))
		srcs = append(srcs, source{name: uniqueName(taken, safeName(name)), what: "manifest " + c.Manifest, dir: d})
	}
	if c.Name != "" && (len(srcs) != 1 || srcs[0].file == nil) {
		return nil, files, usagef("--name names a file, and %s is a directory", srcs[0].what)
	}
	return srcs, files, nil
}

// isDirURL reports whether the URL's path ends in '/'.
func isDirURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && strings.HasSuffix(u.Path, "/")
}

type probeResult struct {
	obj *fetch.Object
	err error
}

// probeCandidates probes, together, the URL arguments that may be files
// (not ending in '/'), each with the --mirror and --metalink flags as
// probeSources reads them; those describe one file, so they need exactly
// one argument.
func probeCandidates(ctx context.Context, client *fetch.Client, c *mountConfig, stderr io.Writer) (map[string]probeResult, error) {
	var urls []string
	for _, a := range c.URLs {
		if !isDirURL(a) {
			urls = append(urls, a)
		}
	}
	if s := &c.Sources; (len(s.Mirrors) > 0 || s.Metalink != "") && (len(urls) != 1 || len(c.Args) != 1 || c.Manifest != "") {
		return nil, usagef("--mirror and --metalink describe one file: give exactly one URL, of a file (got %d, and %d manifests)",
			len(c.Args), min(1, len(c.Manifest)))
	}
	res := make([]probeResult, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Go(func() {
			src, err := probeSources(ctx, client, &c.commonConfig, u, stderr)
			if err == nil {
				res[i].obj = src.obj
			}
			res[i].err = err
		})
	}
	wg.Wait()
	m := make(map[string]probeResult, len(urls))
	for i, u := range urls {
		m[u] = res[i]
	}
	return m, nil
}

// probedObjects are the objects the probes found, for the pool's size.
func probedObjects(probes map[string]probeResult) []*fetch.Object {
	var objs []*fetch.Object
	for _, p := range probes {
		if p.obj != nil {
			objs = append(objs, p.obj)
		}
	}
	return objs
}

// mountFile checks a probed URL the way a mounted file needs and opens its
// cache.
func mountFile(ctx context.Context, c *mountConfig, pool *cache.Pool, t *treeCtx, raw string, o *fetch.Object, err error) (*cache.File, error) {
	if err != nil {
		return nil, err
	}
	if err := checkSize(&c.commonConfig, o); err != nil {
		return nil, err
	}
	if err := checkRanges(ctx, o); err != nil {
		return nil, err
	}
	dir := filepath.Join(c.CacheDir, cache.DirName(cacheIdentity(o, raw, c.VolatileQuery)))
	f, err := cache.Open(dir, metaOf(c, o), o, cache.Options{Pool: pool, Logger: t.log, Root: c.CacheDir, Limits: c.Budget.limits(t.log)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.URL(), err)
	}
	return f, nil
}

// metaOf is the cache identity of the version o.
func metaOf(c *mountConfig, o *fetch.Object) cache.Meta {
	return cache.Meta{Size: o.Size, ChunkSize: c.ChunkSize, ETag: o.ETag, WeakETag: o.WeakETag,
		LastModified: o.LastModified, Date: o.Date, URL: o.URL()}
}

// maybeListing reports whether a URL that failed as a file may be an index
// page: what a file probe makes of one.
func maybeListing(err error) bool {
	return errors.Is(err, fetch.ErrNoSize) || errors.Is(err, fetch.ErrRangeIgnored) || errors.Is(err, fetch.ErrEncoding)
}

// neitherError explains a URL that is neither a mountable file nor a
// listing, and what to do about it.
func neitherError(raw string, fileErr, listErr error) error {
	return fmt.Errorf("%s is neither a file rangefs can mount (%w) nor a directory listing it can read (%v); "+
		"a directory URL should end in '/', a list of files can be mounted with --manifest FILE "+
		"(one 'PATH<TAB>URL' a line), and rangefs get can download a file whose server ignores ranges",
		fetch.Redact(raw), fileErr, listErr)
}

// httpDir checks that raw answers with a listing and returns its directory;
// that first listing is kept, so the mount's first access sends nothing.
func httpDir(ctx context.Context, c *mountConfig, t *treeCtx, raw string) (fs.Dir, error) {
	opts := listing.HTTPOptions{Options: listing.Options{Logger: t.log, UserAgent: c.UserAgent}, Header: c.Headers}
	if c.Insecure {
		opts.Client = &http.Client{Transport: insecureTransport()}
	}
	l, err := listing.NewHTTP(raw, opts)
	if err != nil {
		return nil, err
	}
	es, err := l.List(ctx, "")
	if err != nil {
		return nil, err
	}
	d := &treeDir{t: t, lister: l}
	d.first.Store(&es)
	return d, nil
}

// manifestDir reads the manifest: no listing and no probe.
func manifestDir(c *mountConfig, t *treeCtx) (fs.Dir, error) {
	f, err := os.Open(c.Manifest)
	if err != nil {
		return nil, usagef("--manifest: %v", err)
	}
	defer f.Close()
	m, err := listing.ParseManifest(f, c.Manifest, listing.Options{Logger: t.log})
	if err != nil {
		return nil, usagef("%v", err)
	}
	if m.Len() == 0 {
		return nil, usagef("manifest %s lists no file", c.Manifest)
	}
	return &treeDir{t: t, lister: m}, nil
}

// mountedWhat says what a mount shows, for its first line.
func mountedWhat(srcs []source) string {
	if len(srcs) == 1 && srcs[0].dir != nil {
		return srcs[0].what
	}
	nf, nd := 0, 0
	for _, s := range srcs {
		if s.dir != nil {
			nd++
		} else {
			nf++
		}
	}
	switch {
	case nd == 0:
		return fmt.Sprintf("%d file(s)", nf)
	case nf == 0:
		return fmt.Sprintf("%d directories", nd)
	}
	return fmt.Sprintf("%d file(s) and %d dir(s)", nf, nd)
}

// insecureTransport is the listing transport for --insecure: TLS
// certificates are not verified (the mount has printed the warning).
func insecureTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	tr.MaxResponseHeaderBytes = 64 << 10
	return tr
}

// s3Dir is an s3://BUCKET/PREFIX/ argument, listed once now to fail early
// on a wrong bucket or credentials. Signed access presigns each object's URL
// when it is probed (the fetch engine then sends it as it is); the cache
// identity leaves the signature out, so a new signature finds the cache.
func s3Dir(ctx context.Context, c *mountConfig, t *treeCtx, raw string) (fs.Dir, error) {
	opts := listing.S3Options{Options: listing.Options{Logger: t.log, UserAgent: c.UserAgent}, Endpoint: c.S3Endpoint,
		Region: c.S3Region, Anonymous: c.S3Anonymous}
	if c.Insecure {
		opts.Client = &http.Client{Transport: insecureTransport()}
	}
	l, err := listing.NewS3(ctx, raw, opts)
	if err != nil {
		if !c.S3Anonymous {
			err = fmt.Errorf("%w (for a public bucket, use --s3-anonymous)", err)
		}
		return nil, err
	}
	es, err := l.List(ctx, "")
	if err != nil {
		return nil, err
	}
	d := &treeDir{t: t, lister: l}
	if !c.S3Anonymous {
		d.presign = func(ctx context.Context, u string) (string, error) {
			return l.Presign(ctx, u, presignExpiry)
		}
	}
	d.first.Store(&es)
	return d, nil
}

// presignExpiry is how long a presigned object URL is valid: S3's limit. A
// file is probed again, with a new signature, whenever its cache was closed
// for idleness and it is opened again, and after a failed probe.
const presignExpiry = 7 * 24 * time.Hour
