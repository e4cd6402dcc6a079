package fetchtest

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// FaultKind names one misbehaviour.
type FaultKind int

const (
	// IgnoreRange answers 200 with the full body.
	IgnoreRange FaultKind = iota + 1
	// ErrorPage answers 200 with a small text/html error page. Arg > 0 pads the body to Arg
	// bytes, sent with that Content-Length (multi-GB bodies cost nothing: the padding is
	// generated while sending); Arg == EndlessBody sends an endless chunked body.
	ErrorPage
	// WrongRange answers 206 for the asked range shifted by Arg bytes (default 1), with an
	// honest Content-Range for what is sent.
	WrongRange
	// BadContentRange answers 206 with Content-Range set to the ContentRange field verbatim
	// (none at all when it is "").
	BadContentRange
	// Multipart answers a multipart/byteranges body (the asked range split in two parts).
	Multipart
	// ShortBody closes the connection (FIN) after Arg body bytes.
	ShortBody
	// LongBody drops Content-Length and sends Arg extra bytes after the promised body.
	LongBody
	// Stall stops sending after Arg body bytes and holds the connection open until the
	// client leaves or the server closes.
	Stall
	// BlackHole accepts the request and never answers (until the client leaves).
	BlackHole
	// Trickle sends the body at Arg bytes/s.
	Trickle
	// Reset aborts the TCP connection (RST) after Arg body bytes.
	Reset
	// Status answers Code (e.g. 429, 503, 500, 404) with Retry-After if set. Arg sets the
	// body size as for ErrorPage.
	Status
	// Corrupt serves the asked range normally except that the byte at file offset Arg is
	// inverted: a mirror serving other bytes under the same validators. It matches only
	// requests whose range (or whole body) holds that offset.
	Corrupt
)

// EndlessBody as the Arg of Status or ErrorPage sends a body that never ends (chunked,
// until the client leaves or the server closes): a hostile error page.
const EndlessBody = -1

func (k FaultKind) String() string {
	names := [...]string{"none", "IgnoreRange", "ErrorPage", "WrongRange", "BadContentRange", "Multipart",
		"ShortBody", "LongBody", "Stall", "BlackHole", "Trickle", "Reset", "Status", "Corrupt"}
	if k >= 0 && int(k) < len(names) {
		return names[k]
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault is one injected misbehaviour. Faults are tried in injection order; the first that
// matches a request is applied to it (one fault per request).
type Fault struct {
	Kind         FaultKind
	Arg          int64  // bytes before the cut (ShortBody, Reset, Stall), extra bytes (LongBody), bytes/s (Trickle), shift (WrongRange), body size (Status, ErrorPage)
	Code         int    // Status: the status code
	RetryAfter   string // Status: Retry-After value, seconds or HTTP-date
	ContentRange string // BadContentRange: the Content-Range sent ("" = none)
	// Times is how many matching requests the fault applies to; 0 = every one until
	// ClearFaults.
	Times int
	// Path limits the fault to one path; "" = any.
	Path string
	// Method limits the fault to one method; "" = GET, except Status and BlackHole which
	// apply to any method.
	Method string
	// RangedOnly limits the fault to requests with a Range header.
	RangedOnly bool
	// After, if set, runs in the handler goroutine once the faulty answer is done (e.g. to
	// swap the content between a broken attempt and its retry). A cut connection (ShortBody,
	// Reset) runs it before the close, so a retry cannot arrive before it has run.
	After func()
}

type activeFault struct {
	f    Fault
	left int // < 0: unlimited
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := f.Times
	if left <= 0 {
		left = -1
	}
	s.faults = append(s.faults, &activeFault{f: f, left: left})
}

// ClearFaults removes all injected faults (requests already being answered keep theirs).
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

func (f *Fault) matches(r *http.Request) bool {
	m := f.Method
	if m == "" && f.Kind != Status && f.Kind != BlackHole {
		m = http.MethodGet
	}
	if f.Kind == Corrupt {
		if a, b, ok := parseRange(r.Header.Get("Range")); ok && (f.Arg < a || f.Arg > b) {
			return false
		}
	}
	return (m == "" || m == r.Method) && (f.Path == "" || f.Path == r.URL.Path) &&
		(!f.RangedOnly || r.Header.Get("Range") != "")
}

// pickFaultLocked returns the fault for r (consuming one use) or nil. s.mu is held.
func (s *Server) pickFaultLocked(r *http.Request) *Fault {
	for i, af := range s.faults {
		if !af.f.matches(r) {
			continue
		}
		f := af.f
		if af.left > 0 {
			af.left--
			if af.left == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return &f
	}
	return nil
}

// rewriteRange changes the request's Range header so that ServeContent produces the wrong
// answer the fault asks for.
func rewriteRange(r *http.Request, f *Fault, size int64) {
	switch f.Kind {
	case IgnoreRange:
		r.Header.Del("Range")
		r.Header.Del("If-Range")
	case WrongRange:
		a, b, ok := parseRange(r.Header.Get("Range"))
		if !ok {
			return
		}
		shift := f.Arg
		if shift == 0 {
			shift = 1
		}
		n := min(b, size-1) - a + 1
		switch {
		case a+shift >= 0 && a+shift+n <= size:
			a += shift
		case a-shift >= 0 && a-shift+n <= size:
			a -= shift
		case n > 1:
			n-- // cannot move it: send a shorter range instead
		default:
			return
		}
		r.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", a, a+n-1))
	case Multipart:
		a, b, ok := parseRange(r.Header.Get("Range"))
		if !ok {
			return
		}
		m := a + (b-a)/2
		if m == b {
			r.Header.Set("Range", fmt.Sprintf("bytes=%d-%d,%d-%d", a, b, a, b))
			return
		}
		r.Header.Set("Range", fmt.Sprintf("bytes=%d-%d,%d-%d", a, m, m+1, b))
	}
}

var errAborted = errors.New("fetchtest: response aborted by injected fault")

// faultWriter sits between ServeContent and the real ResponseWriter: it edits the header
// block once and applies the body faults as bytes pass. It counts body bytes sent.
type faultWriter struct {
	rw    http.ResponseWriter
	s     *Server
	r     *http.Request
	b     Behavior
	fault *Fault

	wroteHeader bool
	code        int
	sent        int64
	gz          *gzip.Writer
	bodyOff     int64  // file offset of the first body byte (Corrupt)
	dead        bool   // connection hijacked or abandoned: drop further writes
	after       func() // the fault's After, until it has run
}

// runAfter runs the fault's After hook, once.
func (fw *faultWriter) runAfter() {
	if f := fw.after; f != nil {
		fw.after = nil
		f()
	}
}

func (fw *faultWriter) Header() http.Header { return fw.rw.Header() }

func (fw *faultWriter) WriteHeader(code int) {
	if fw.wroteHeader {
		return
	}
	fw.wroteHeader, fw.code = true, code
	h := fw.rw.Header()
	if fw.b.NoAcceptRanges {
		h.Del("Accept-Ranges")
	}
	if fw.b.NoContentLength {
		h.Del("Content-Length")
	}
	body := code == http.StatusOK || code == http.StatusPartialContent
	if fw.fault != nil && body {
		switch fw.fault.Kind {
		case BadContentRange:
			if code == http.StatusPartialContent {
				if fw.fault.ContentRange == "" {
					h.Del("Content-Range")
				} else {
					h.Set("Content-Range", fw.fault.ContentRange)
				}
			}
		case LongBody:
			h.Del("Content-Length")
		}
	}
	if fw.b.Gzip && body && fw.r.Method == http.MethodGet {
		h.Del("Content-Length")
		fw.gz = gzip.NewWriter(bodyWriter{fw})
	} else {
		h.Del("Content-Encoding") // error answers from ServeContent are never compressed
	}
	fw.rw.WriteHeader(code)
	if body && h.Get("Content-Length") == "" {
		// Commit the header now: otherwise net/http adds a Content-Length itself to a
		// small response that fits in its buffer, and "no length" would not be tested.
		_ = http.NewResponseController(fw.rw).Flush()
	}
}

func (fw *faultWriter) Write(p []byte) (int, error) {
	if !fw.wroteHeader {
		fw.WriteHeader(http.StatusOK)
	}
	if fw.gz != nil {
		return fw.gz.Write(p)
	}
	return fw.writeBody(p)
}

// copyBufs holds the buffers of ReadFrom, the fast path for ServeContent's copy.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// ReadFrom copies with a large buffer (fewer, bigger writes than io.Copy's 32 KiB) so the
// server is not the bottleneck of loopback benchmarks.
func (fw *faultWriter) ReadFrom(src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var total int64
	for {
		n, er := src.Read(*bp)
		if n > 0 {
			m, ew := fw.Write((*bp)[:n])
			total += int64(m)
			if ew != nil {
				return total, ew
			}
		}
		if er == io.EOF {
			return total, nil
		}
		if er != nil {
			return total, er
		}
	}
}

// bodyWriter lets the gzip writer feed compressed bytes through the fault logic.
type bodyWriter struct{ fw *faultWriter }

func (b bodyWriter) Write(p []byte) (int, error) { return b.fw.writeBody(p) }

// writeBody writes body bytes to the client, applying the fault on the way.
func (fw *faultWriter) writeBody(p []byte) (int, error) {
	if fw.dead {
		return 0, errAborted
	}
	f := fw.fault
	if f == nil {
		return fw.raw(p)
	}
	switch f.Kind {
	case ShortBody, Reset, Stall:
		if fw.sent+int64(len(p)) <= f.Arg {
			return fw.raw(p)
		}
		n, err := fw.raw(p[:max(f.Arg-fw.sent, 0)])
		if err != nil {
			return n, err
		}
		fw.cut(f.Kind)
		return n, errAborted
	case Trickle:
		return fw.trickle(p, f.Arg)
	case Corrupt:
		start := fw.bodyOff
		if fw.code == http.StatusOK {
			start = 0 // the whole body
		}
		if i := f.Arg - start - fw.sent; i >= 0 && i < int64(len(p)) {
			q := append([]byte(nil), p...)
			q[i] ^= 0xFF
			return fw.raw(q)
		}
	}
	return fw.raw(p)
}

func (fw *faultWriter) raw(p []byte) (int, error) {
	n, err := fw.rw.Write(p)
	fw.sent += int64(n)
	return n, err
}

// cut ends the response the way kind says, after flushing what was written.
func (fw *faultWriter) cut(kind FaultKind) {
	fw.dead = true
	rc := http.NewResponseController(fw.rw)
	_ = rc.Flush()
	if kind == Stall {
		fw.s.wait(fw.r)
		return
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		return
	}
	fw.runAfter() // before the client can see the cut and retry
	if kind == Reset {
		if tc := tcpConn(conn); tc != nil {
			_ = tc.SetLinger(0) // close sends RST instead of FIN
		}
	}
	conn.Close()
}

// trickle writes p slowly, a small piece at a time, flushing each.
func (fw *faultWriter) trickle(p []byte, bps int64) (int, error) {
	bps = max(bps, 1)
	piece := max(int(bps/20), 1)
	rc := http.NewResponseController(fw.rw)
	written := 0
	for written < len(p) {
		n, err := fw.raw(p[written:min(written+piece, len(p))])
		written += n
		if err != nil {
			return written, err
		}
		_ = rc.Flush()
		t := time.NewTimer(time.Duration(int64(n) * int64(time.Second) / bps))
		select {
		case <-t.C:
		case <-fw.r.Context().Done():
			t.Stop()
			return written, errAborted
		case <-fw.s.closing:
			t.Stop()
			return written, errAborted
		}
	}
	return written, nil
}

// finish completes the response after ServeContent: close the gzip stream, add the extra
// bytes of LongBody.
func (fw *faultWriter) finish() {
	if fw.dead {
		return
	}
	if fw.gz != nil {
		_ = fw.gz.Close()
	}
	if f := fw.fault; f != nil && f.Kind == LongBody && (fw.code == http.StatusOK || fw.code == http.StatusPartialContent) {
		extra := make([]byte, f.Arg)
		for i := range extra {
			extra[i] = 0xA5
		}
		_, _ = fw.raw(extra)
	}
}

// tcpConn digs the *net.TCPConn out of a hijacked connection (through TLS and our
// listener's wrapper).
func tcpConn(c net.Conn) *net.TCPConn {
	for {
		switch x := c.(type) {
		case *net.TCPConn:
			return x
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
}

// padBody writes page and then filler until the body is size bytes (size == EndlessBody:
// without end). Content-Length is set for a finite size. It stops when the client leaves
// (a write fails) or the server closes, so an endless body costs nothing after the test.
func (fw *faultWriter) padBody(code int, contentType, page string, size int64) {
	h := fw.rw.Header()
	h.Set("Content-Type", contentType)
	if size >= 0 {
		size = max(size, int64(len(page)))
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	fw.rw.WriteHeader(code)
	n, err := fw.raw([]byte(page))
	if err != nil {
		return
	}
	var filler [32 << 10]byte
	for i := range filler {
		filler[i] = ' '
	}
	for left := size - int64(n); size < 0 || left > 0; {
		select {
		case <-fw.s.closing:
			return
		case <-fw.r.Context().Done():
			return
		default:
		}
		piece := filler[:]
		if size >= 0 {
			piece = piece[:min(int64(len(piece)), left)]
			left -= int64(len(piece))
		}
		if _, err := fw.raw(piece); err != nil {
			return
		}
	}
}
