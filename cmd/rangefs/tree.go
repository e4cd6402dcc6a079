package main

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"rangefs/fetch"
	"rangefs/fetch/listing"
	"rangefs/fs"
)

// This file turns listing entries into the fs node interface: a treeDir
// lists one directory of a Lister when fs asks, a treeFile probes its URL
// when it is first opened (or stat'ed with only a size hint), and the
// objects table (objects.go) opens its cache on first use and closes it
// when idle.

// treeCtx is what every node of one mount's tree shares.
type treeCtx struct {
	c       *mountConfig
	client  *fetch.Client
	objects *objects
	log     *slog.Logger
	ctx     context.Context // ends at unmount: background probes stop
	// probes bounds the background probes of siblings to the connection
	// limit (the client bounds all requests too; this keeps goroutines few).
	probes chan struct{}
}

// treeDir is one directory of a Lister.
type treeDir struct {
	t      *treeCtx
	lister listing.Lister
	path   string // slash-separated below the lister's root; "" is the root
	mtime  time.Time
	// presign, when set, turns an object URL into the URL to fetch (S3
	// signed access).
	presign func(ctx context.Context, rawURL string) (string, error)
	// first is a listing made at mount time (to tell a directory URL from
	// a file), served to the first List instead of asking again.
	first atomic.Pointer[[]listing.Entry]
}

var _ fs.Dir = (*treeDir)(nil)

func (d *treeDir) Mtime() time.Time { return d.mtime }

func (d *treeDir) List(ctx context.Context) ([]fs.Entry, error) {
	if first := d.first.Swap(nil); first != nil {
		return d.t.entries(d, *first), nil
	}
	es, err := d.lister.List(ctx, d.path)
	if err != nil {
		var se *listing.StatusError
		if errors.As(err, &se) && (se.Code == http.StatusNotFound || se.Code == http.StatusGone) ||
			errors.Is(err, listing.ErrNotDir) {
			return nil, fmt.Errorf("%w: %w", iofs.ErrNotExist, err)
		}
		return nil, err
	}
	return d.t.entries(d, es), nil
}

// entries makes the nodes of one listing. The files share a probeGroup, so
// that a stat of one file whose size is a hint probes its siblings too, in
// parallel, before the next stat asks for them.
func (t *treeCtx) entries(d *treeDir, es []listing.Entry) []fs.Entry {
	out := make([]fs.Entry, len(es))
	var g *probeGroup
	for i := range es {
		e := &es[i]
		out[i].Name = e.Name
		if e.IsDir {
			out[i].Dir = &treeDir{t: t, lister: d.lister, presign: d.presign, path: joinRel(d.path, e.Name), mtime: e.ModTime}
			continue
		}
		f := &treeFile{e: *e, t: t, presign: d.presign}
		if !e.SizeExact {
			if g == nil {
				g = &probeGroup{}
			}
			f.group, f.gi = g, int32(len(g.files))
			g.files = append(g.files, f)
		}
		out[i].File = f
	}
	return out
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// treeFile is one remote file of a listing. It is probed when first opened,
// or at a stat when the listing gave no exact size; its cache is opened by
// the objects table. Safe for concurrent use.
type treeFile struct {
	e     listing.Entry
	t     *treeCtx
	group *probeGroup // siblings whose sizes are hints; nil when exact
	gi    int32       // the file's index in group.files
	// presign, when set, makes the URL to fetch from e.URL (S3).
	presign func(ctx context.Context, rawURL string) (string, error)

	mu    sync.Mutex
	probe *probeCall // the latest probe; nil before the first. Protects: probe.

	slot atomic.Pointer[slot] // the cache slot, once opened
	sha  shaCheck
}

var _ fs.File = (*treeFile)(nil)

// probeCall is one probe; done is closed when the other fields are set.
type probeCall struct {
	done chan struct{}
	obj  *fetch.Object
	url  string // what was probed: e.URL, or a presigned form of it
	err  error
	at   time.Time
}

// failedProbeRetry is how long a failed probe is the answer before the
// next stat or open tries again.
const failedProbeRetry = 5 * time.Second

// probed returns the probe's result if it is done, without waiting.
func (f *treeFile) probed() *fetch.Object {
	f.mu.Lock()
	p := f.probe
	f.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return p.obj
	default:
		return nil
	}
}

// probeNow returns the probe of the file, starting one when there is none
// (or the last one failed a while ago), and waits for it within ctx.
func (f *treeFile) probeNow(ctx context.Context) (*fetch.Object, error) {
	p, err := f.probeCall(ctx)
	if err != nil {
		return nil, err
	}
	return p.obj, p.err
}

// probeCall is probeNow's call, done, with the URL it probed.
func (f *treeFile) probeCall(ctx context.Context) (*probeCall, error) {
	f.mu.Lock()
	p := f.probe
	if p != nil {
		select {
		case <-p.done:
			if p.err != nil && time.Since(p.at) >= failedProbeRetry ||
				f.presign != nil && time.Since(p.at) >= presignExpiry/2 {
				p = nil // failed a while ago, or its signature is getting old
			}
		default:
		}
	}
	if p == nil {
		p = &probeCall{done: make(chan struct{})}
		f.probe = p
		go func() {
			// The probe is shared: one impatient caller does not end it.
			p.url = f.e.URL
			if f.presign != nil {
				p.url, p.err = f.presign(f.t.ctx, f.e.URL)
			}
			if p.err == nil {
				p.obj, p.err = f.t.client.Probe(f.t.ctx, p.url)
			}
			p.at = time.Now()
			close(p.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-p.done:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// reprobe drops a probe whose version the server no longer serves, so the
// next open learns the new one.
func (f *treeFile) reprobe(old *fetch.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.probe != nil && f.probe.obj == old {
		f.probe = nil
	}
}

func (f *treeFile) Attr() fs.Attr {
	if o := f.probed(); o != nil {
		return fs.Attr{Size: o.Size, Mtime: f.mtime(o), Exact: true}
	}
	return fs.Attr{Size: max(f.e.Size, 0), Mtime: f.e.ModTime, Exact: f.e.SizeExact}
}

func (f *treeFile) mtime(o *fetch.Object) time.Time {
	if t := lastModified(o); !t.IsZero() {
		return t
	}
	return f.e.ModTime
}

func (f *treeFile) Stat(ctx context.Context) (fs.Attr, error) {
	if f.group != nil {
		f.group.ahead(f.t, f)
	}
	o, err := f.probeNow(ctx)
	if err != nil {
		return fs.Attr{}, err
	}
	return fs.Attr{Size: o.Size, Mtime: f.mtime(o), Exact: true}, nil
}

func (f *treeFile) Open(ctx context.Context) (fs.Reader, error) {
	if f.sha.failed() {
		// Before any byte: a new open must not be served from the kernel's
		// page cache either.
		return nil, errSHA256Mismatch
	}
	p, err := f.probeCall(ctx)
	if err == nil {
		err = p.err
	}
	if err != nil {
		if errors.Is(err, fetch.ErrGone) {
			return nil, fmt.Errorf("%w: %w", iofs.ErrNotExist, err)
		}
		if errors.Is(err, fetch.ErrNoSize) || errors.Is(err, fetch.ErrEncoding) {
			return nil, fmt.Errorf("%w: %w; rangefs get can still download it", errors.ErrUnsupported, err)
		}
		return nil, err
	}
	o := p.obj
	if !o.Ranges {
		return nil, fmt.Errorf("%w: %s: %w: the server answers a Range request with the whole file, so it cannot be read in place (rangefs get can still download it)",
			errors.ErrUnsupported, o.URL(), fetch.ErrRangeIgnored)
	}
	if err := checkSize(&f.t.c.commonConfig, o); err != nil {
		return nil, err
	}
	return f.t.objects.open(f, o, p.url)
}

func (f *treeFile) Stats() fs.Stats {
	var st fs.Stats
	if s := f.slot.Load(); s != nil && s.last.Load() != nil {
		st = fs.StatsOf(s.last.Load())
		if f.sha.pending() && st.Chunks == st.Present {
			f.t.objects.checkSHA256(f, s)
		}
	} else {
		st = fs.Stats{URL: fetch.Redact(f.e.URL), ETag: f.e.ETag, Size: max(f.e.Size, 0)}
		if o := f.probed(); o != nil {
			st.ETag, st.LastModified, st.Size = o.ETag, o.LastModified, o.Size
		}
	}
	if f.e.SHA256 != "" {
		st.More = []fs.Xattr{{Name: "sha256", Value: f.e.SHA256}, {Name: "sha256_check", Value: f.sha.String()}}
	}
	return st
}

func (f *treeFile) Version() string {
	e := &f.e
	return e.URL + "\x00" + e.ETag + "\x00" + strconv.FormatInt(e.Size, 10) + "\x00" +
		strconv.FormatBool(e.SizeExact) + "\x00" + e.ModTime.UTC().Format(time.RFC3339Nano) + "\x00" + e.SHA256
}

// probeGroup probes, ahead of the stats, the files of one listing whose
// sizes are hints: `ls -l` stats the files one after another in name order
// (the listing's), so a stat of the file at index i starts the probes of
// the next probeAhead files, in parallel within the connection limit, and
// each later stat finds its probe done or under way. A stat of one file in
// a huge directory probes a few dozen more, not the whole directory.
type probeGroup struct {
	files []*treeFile

	mu   sync.Mutex
	next int // files[:next] have been started. Protects: next.
}

// probeAhead is how far ahead of the last stat the group probes.
const probeAhead = 64

// ahead starts the probes of the files after the index of f.
func (g *probeGroup) ahead(t *treeCtx, f *treeFile) {
	g.mu.Lock()
	lo := max(g.next, int(f.gi)+1)
	hi := min(len(g.files), int(f.gi)+1+probeAhead)
	if hi > g.next {
		g.next = hi
	}
	g.mu.Unlock()
	if lo >= hi {
		return
	}
	go func() {
		for _, sib := range g.files[lo:hi] {
			if sib.probed() != nil {
				continue
			}
			select {
			case t.probes <- struct{}{}:
			case <-t.ctx.Done():
				return
			}
			go func() {
				defer func() { <-t.probes }()
				sib.probeNow(t.ctx)
			}()
		}
	}()
}

// dirName is the name a directory URL gets beside other arguments: its
// last path component, else its host (for s3://, the bucket).
func dirName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "dir"
	}
	name := path.Base("/" + strings.Trim(u.Path, "/"))
	if name == "/" || strings.Trim(name, ".") == "" {
		name = u.Hostname()
	}
	if name == "" || strings.ContainsRune(name, 0) {
		return "dir"
	}
	return safeName(name)
}
