// Package fetchtest is an HTTP range server with switchable faults, for tests and
// benchmarks of range clients. Normal answers come from http.ServeContent; each fault of the
// HTTP/network list in RELIABILITY.md can be injected for the next N requests or until
// cleared, and every switch is safe to flip while requests are in flight.
//
// It listens on loopback only (127.0.0.1:0 unless WithAddr says otherwise).
package fetchtest

import (
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPath is where NewServer serves its content.
const DefaultPath = "/file"

// ETagMode selects the validators the server sends.
type ETagMode int

const (
	ETagStrong ETagMode = iota // "v1-<size>"
	ETagWeak                   // W/"v1-<size>"
	ETagNone                   // no ETag (Last-Modified only, unless NoLastModified)
)

// Behavior is how the server answers when no fault applies. Change it with SetBehavior at
// any time; each request uses one consistent snapshot.
type Behavior struct {
	ETag            ETagMode
	NoLastModified  bool // omit Last-Modified
	HeadStatus      int  // non-zero: answer every HEAD with this status (403/405 like presigned URLs)
	NoContentLength bool // omit Content-Length (chunked bodies; HEAD without length)
	NoAcceptRanges  bool // omit "Accept-Ranges: bytes"
	IgnoreIfRange   bool // serve ranges of the current version whatever If-Range says
	// DropFailedIfRange closes the connection without any answer when a request's If-Range
	// names another version, as nginx's slice module does when it cannot send the full 200
	// a failed If-Range calls for.
	DropFailedIfRange  bool
	Gzip               bool   // gzip every GET body and send Content-Encoding: gzip
	ContentDisposition string // sent as Content-Disposition when non-empty
}

// Stats are cumulative counters since start or ResetStats.
type Stats struct {
	Requests      int64 // all requests, any method
	RangeRequests int64 // requests carrying a Range header
	BytesSent     int64 // body bytes written by handlers
	Connections   int64 // TCP connections accepted
	InFlight      int64 // requests being served now
	MaxConcurrent int64 // most requests served at once
}

// Request is what the server saw of one request.
type Request struct {
	Method, Host, Path, RawQuery string
	Range, IfRange               string
	Proto                        string // "HTTP/1.1", "HTTP/2.0"
	Header                       http.Header
}

// maxLog bounds the request log and the per-range counter map (benchmarks run long).
const maxLog = 1 << 14

type file struct {
	content io.ReaderAt
	size    int64
	version int
}

// baseTime is Last-Modified of version 1; each new version adds an hour.
var baseTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func (f *file) etag(mode ETagMode) string {
	switch mode {
	case ETagWeak:
		return fmt.Sprintf(`W/"v%d-%d"`, f.version, f.size)
	case ETagNone:
		return ""
	}
	return fmt.Sprintf(`"v%d-%d"`, f.version, f.size)
}

func (f *file) modTime() time.Time { return baseTime.Add(time.Duration(f.version-1) * time.Hour) }

// Server is a running test server. All methods are safe for concurrent use. Close it (tests:
// t.Cleanup(s.Close)); Close unblocks stalled and black-holed requests first.
type Server struct {
	hs      *httptest.Server
	base    string
	defPath string
	closing chan struct{}
	once    sync.Once

	connRate atomic.Int64 // bytes/s per TCP connection, 0 = unlimited

	mu        sync.Mutex
	conns     map[*rateConn]struct{} // open connections
	files     map[string]*file
	redirects map[string]redirect
	behavior  Behavior
	faults    []*activeFault
	stats     Stats
	ranges    map[string]int64
	log       []Request
}

type redirect struct {
	to   string
	code int
}

// Option configures NewServer.
type Option func(*config)

type config struct {
	path     string
	addr     string
	tls      bool
	http2    bool
	connRate int64
	behavior Behavior
}

// WithPath serves the content at p instead of DefaultPath.
func WithPath(p string) Option { return func(c *config) { c.path = p } }

// WithAddr listens on addr (e.g. "127.0.0.1:8080") instead of 127.0.0.1:0.
func WithAddr(addr string) Option { return func(c *config) { c.addr = addr } }

// WithTLS serves HTTPS (HTTP/1.1) with httptest's self-signed certificate.
func WithTLS() Option { return func(c *config) { c.tls = true } }

// WithHTTP2 serves HTTPS with HTTP/2 offered by ALPN (implies WithTLS).
func WithHTTP2() Option { return func(c *config) { c.tls, c.http2 = true, true } }

// WithConnRate caps every TCP connection at bps bytes/s (see SetConnRate).
func WithConnRate(bps int64) Option { return func(c *config) { c.connRate = bps } }

// WithBehavior sets the initial Behavior.
func WithBehavior(b Behavior) Option { return func(c *config) { c.behavior = b } }

// NewServer starts a server answering GET and HEAD for content (size bytes) at DefaultPath
// (or WithPath). content may be a Pattern, a bytes.Reader, or an *os.File (the caller keeps
// it open until Close). It panics if it cannot listen, like httptest.NewServer.
func NewServer(content io.ReaderAt, size int64, opts ...Option) *Server {
	cfg := config{path: DefaultPath}
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{
		defPath:   cfg.path,
		closing:   make(chan struct{}),
		conns:     map[*rateConn]struct{}{},
		files:     map[string]*file{cfg.path: {content: content, size: size, version: 1}},
		redirects: map[string]redirect{},
		behavior:  cfg.behavior,
		ranges:    map[string]int64{},
	}
	s.connRate.Store(cfg.connRate)
	s.hs = httptest.NewUnstartedServer(s)
	if cfg.addr != "" {
		l, err := net.Listen("tcp", cfg.addr)
		if err != nil {
			panic(fmt.Sprintf("fetchtest: listen on %s: %v", cfg.addr, err))
		}
		s.hs.Listener.Close()
		s.hs.Listener = l
	}
	s.hs.Listener = &countingListener{Listener: s.hs.Listener, s: s}
	// The faults provoke the server's own complaints (aborted writes, hijacks); keep test
	// output clean.
	s.hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	if cfg.tls {
		s.hs.EnableHTTP2 = cfg.http2
		s.hs.StartTLS()
	} else {
		s.hs.Start()
	}
	s.base = s.hs.URL
	return s
}

// RestartAfter starts a server of content at addr (the address of one that was
// closed) once d has passed, as a restarted origin comes back. The returned stop
// cancels the restart if it has not happened yet, or closes the new server.
func RestartAfter(d time.Duration, content io.ReaderAt, size int64, addr string) (stop func()) {
	var (
		mu   sync.Mutex
		back *Server
	)
	restart := time.AfterFunc(d, func() {
		mu.Lock()
		defer mu.Unlock()
		back = NewServer(content, size, WithAddr(addr))
	})
	return func() {
		restart.Stop()
		mu.Lock()
		defer mu.Unlock()
		if back != nil {
			back.Close()
		}
	}
}

// URL is the full URL of the default content.
func (s *Server) URL() string { return s.base + s.defPath }

// URLFor is the URL of path p on this server.
func (s *Server) URLFor(p string) string { return s.base + p }

// URLWithHost is the URL of p with the host name replaced (same port), e.g. "localhost" to
// make the same server look like a second host.
func (s *Server) URLWithHost(host, p string) string {
	u, _ := url.Parse(s.base)
	u.Host = net.JoinHostPort(host, u.Port())
	return u.String() + p
}

// Addr is the listening address (host:port).
func (s *Server) Addr() string { return s.hs.Listener.Addr().String() }

// Certificate is the TLS certificate (nil without WithTLS).
func (s *Server) Certificate() *x509.Certificate { return s.hs.Certificate() }

// Close unblocks every stalled request, closes all connections and stops the server.
// Idempotent.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.hs.CloseClientConnections()
		s.hs.Close()
	})
}

// AddFile serves content at path p (version 1).
func (s *Server) AddFile(p string, content io.ReaderAt, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[p] = &file{content: content, size: size, version: 1}
}

// SetContent replaces the content at p with a new version: new ETag and Last-Modified. A
// response already being sent keeps sending the old bytes (as a real server would).
func (s *Server) SetContent(p string, content io.ReaderAt, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := 1
	if f := s.files[p]; f != nil {
		v = f.version + 1
	}
	s.files[p] = &file{content: content, size: size, version: v}
}

// Remove makes p answer 404.
func (s *Server) Remove(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.files, p)
}

// ETag is the ETag currently sent for p under the current Behavior ("" if none).
func (s *Server) ETag(p string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[p]; f != nil {
		return f.etag(s.behavior.ETag)
	}
	return ""
}

// SetBehavior replaces the normal-answer behavior.
func (s *Server) SetBehavior(b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behavior = b
}

// Behavior returns the current behavior.
func (s *Server) Behavior() Behavior {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.behavior
}

// Redirect makes requests for path from answer code (301/302/303/307/308) with Location to.
// to may be a path on this server or an absolute URL (another host, another scheme).
func (s *Server) Redirect(from, to string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirects[from] = redirect{to: to, code: code}
}

// ClearRedirects removes all redirects.
func (s *Server) ClearRedirects() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirects = map[string]redirect{}
}

// SetConnRate caps every TCP connection (current and future) at bps bytes/s, like a slow
// link; 0 removes the cap.
func (s *Server) SetConnRate(bps int64) { s.connRate.Store(bps) }

// FreezeConnections makes every connection open now go dead: it sends and receives nothing
// more (bytes the client sends are dropped), with neither FIN nor RST, like a kept-alive
// connection whose path died (NAT timeout, peer gone). Like a real dead path, it does not
// notice the client giving up: its server side stays blocked until Close. New connections
// are normal. It returns how many connections it froze.
func (s *Server) FreezeConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.frozen.Store(true)
	}
	return len(s.conns)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Requests returns the log of requests seen (at most the last 16384).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.log...)
}

// Ranges returns the Range header values seen, in order (GET requests only).
func (s *Server) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r []string
	for _, q := range s.log {
		if q.Method == http.MethodGet && q.Range != "" {
			r = append(r, q.Range)
		}
	}
	return r
}

// RangeCounts returns how many requests asked for each Range value.
func (s *Server) RangeCounts() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int64, len(s.ranges))
	for k, v := range s.ranges {
		m[k] = v
	}
	return m
}

// ResetStats zeroes the counters (except InFlight) and empties the request log.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{InFlight: s.stats.InFlight}
	s.ranges = map[string]int64{}
	s.log = nil
}

// begin records r and returns a consistent snapshot of what to serve.
func (s *Server) begin(r *http.Request) (f *file, b Behavior, rd *redirect, flt *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	st.Requests++
	st.InFlight++
	st.MaxConcurrent = max(st.MaxConcurrent, st.InFlight)
	rg := r.Header.Get("Range")
	if rg != "" {
		st.RangeRequests++
		if _, ok := s.ranges[rg]; ok || len(s.ranges) < maxLog {
			s.ranges[rg]++
		}
	}
	if len(s.log) >= maxLog {
		s.log = append(s.log[:0], s.log[len(s.log)/2:]...)
	}
	s.log = append(s.log, Request{
		Method: r.Method, Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Range: rg, IfRange: r.Header.Get("If-Range"), Header: r.Header.Clone(), Proto: r.Proto,
	})
	if x, ok := s.redirects[r.URL.Path]; ok {
		return nil, s.behavior, &x, nil // a redirect hop consumes no fault
	}
	return s.files[r.URL.Path], s.behavior, nil, s.pickFaultLocked(r)
}

func (s *Server) end(sent int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.InFlight--
	s.stats.BytesSent += sent
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, b, rd, flt := s.begin(r)
	fw := &faultWriter{rw: w, s: s, r: r, b: b}
	defer func() { s.end(fw.sent) }()
	if flt != nil && flt.After != nil {
		fw.after = flt.After
		defer fw.runAfter()
	}

	if rd != nil {
		w.Header().Set("Location", rd.to)
		w.WriteHeader(rd.code)
		return
	}
	if flt != nil {
		switch flt.Kind {
		case BlackHole:
			s.wait(r)
			return
		case Status:
			if flt.RetryAfter != "" {
				w.Header().Set("Retry-After", flt.RetryAfter)
			}
			page := fmt.Sprintf("%d %s (injected)\n", flt.Code, http.StatusText(flt.Code))
			fw.padBody(flt.Code, "text/plain; charset=utf-8", page, bodySize(flt.Arg, page))
			return
		case ErrorPage:
			fw.padBody(http.StatusOK, "text/html; charset=utf-8", errorPage, bodySize(flt.Arg, errorPage))
			return
		}
	}
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodHead && b.HeadStatus != 0 {
		w.WriteHeader(b.HeadStatus)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}

	h := w.Header()
	h.Set("Content-Type", "application/octet-stream") // also stops ServeContent sniffing
	if e := f.etag(b.ETag); e != "" {
		h.Set("Etag", e)
	}
	if b.ContentDisposition != "" {
		h.Set("Content-Disposition", b.ContentDisposition)
	}
	if b.Gzip && r.Method == http.MethodGet {
		// Set before ServeContent so that it leaves Content-Length out.
		h.Set("Content-Encoding", "gzip")
	}
	modTime := f.modTime()
	if b.NoLastModified {
		modTime = time.Time{}
	}
	if b.IgnoreIfRange {
		r.Header.Del("If-Range")
	}
	if ir := r.Header.Get("If-Range"); b.DropFailedIfRange && ir != "" && ir != h.Get("Etag") &&
		ir != modTime.UTC().Format(http.TimeFormat) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	fw.fault = flt
	if flt != nil {
		rewriteRange(r, flt, f.size)
		if a, _, ok := parseRange(r.Header.Get("Range")); ok {
			fw.bodyOff = a
		}
	}
	http.ServeContent(fw, r, "", modTime, io.NewSectionReader(f.content, 0, f.size))
	fw.finish()
}

// wait blocks until the client goes away or the server closes.
func (s *Server) wait(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.closing:
	}
}

// bodySize maps a Status/ErrorPage Arg to padBody's size: 0 means just the page.
func bodySize(arg int64, page string) int64 {
	if arg == 0 {
		return int64(len(page))
	}
	return arg
}

const errorPage = "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n"

// parseRange reads "bytes=a-b" (the only form range clients under test send).
func parseRange(v string) (a, b int64, ok bool) {
	v, found := strings.CutPrefix(v, "bytes=")
	if !found {
		return 0, 0, false
	}
	as, bs, found := strings.Cut(v, "-")
	if !found {
		return 0, 0, false
	}
	if _, err := fmt.Sscan(as, &a); err != nil {
		return 0, 0, false
	}
	if _, err := fmt.Sscan(bs, &b); err != nil {
		return 0, 0, false
	}
	return a, b, a >= 0 && b >= a
}
