package fetch

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Client is an HTTP(S) range client: one connection pool, one rate limiter, one set of
// options. It is safe for concurrent use; Objects from Probe share it. Close releases idle
// connections; the Client stays usable afterwards (it just dials again).
type Client struct {
	o        Options
	hc       *http.Client
	tr       *http.Transport
	limiter  *tokenBucket // nil when unlimited
	limitsMu sync.Mutex
	limits   map[string]*adaptiveLimit // per URL host: requests in flight, lowered while it sheds load
	resolver *net.Resolver             // nil = the default; tests answer names without real DNS
	bufs     sync.Pool                 // *[]byte of copyBufSize: the only body buffers
}

// copyBufSize is the fixed body buffer: large enough for few syscalls per MiB, small enough
// that memory stays proportional to connections, never to file or range size.
const copyBufSize = 256 << 10

// NewClient returns a Client configured by o (see Options for defaults).
func NewClient(o Options) *Client { return newClient(o, nil) }

// newClient is NewClient with the resolver the real dialer uses (nil = the default).
func newClient(o Options, resolver *net.Resolver) *Client {
	o = o.withDefaults()
	c := &Client{o: o, limits: map[string]*adaptiveLimit{}, resolver: resolver}
	c.bufs.New = func() any { b := make([]byte, copyBufSize); return &b }
	if o.RateLimit > 0 {
		c.limiter = newTokenBucket(o.RateLimit)
	}
	c.tr = &http.Transport{
		Proxy:                 o.Proxy,
		DialContext:           c.dialer(),
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: o.Insecure, RootCAs: o.RootCAs}, // skip only by explicit user choice
		TLSHandshakeTimeout:   o.TLSHandshakeTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		MaxConnsPerHost:       o.Connections,
		MaxIdleConnsPerHost:   o.Connections,
		MaxIdleConns:          4 * o.Connections,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // we ask for identity and reject anything else
		ForceAttemptHTTP2:     true, // HTTP/2 over TLS only: plain http stays HTTP/1.1 (no h2c)
		// HTTP/2 multiplexes every request onto one connection, so a dead one must be found
		// out, or each retry opens another stream on it: after StallTimeout without a frame
		// the transport pings, and closes the connection if no answer comes in StallTimeout.
		HTTP2:                  &http.HTTP2Config{SendPingTimeout: o.StallTimeout, PingTimeout: o.StallTimeout},
		MaxResponseHeaderBytes: maxHeaderBytes,
		ReadBufferSize:         64 << 10,
		WriteBufferSize:        8 << 10,
	}
	c.hc = &http.Client{Transport: c.tr, CheckRedirect: c.checkRedirect}
	return c
}

// Close closes idle connections. Requests in flight are not affected.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// allowKey is the context key under which a request carries the one IP address that may be
// dialed even though it is link-local etc. (the user asked for it explicitly).
type allowKey struct{}

// forbiddenIP reports addresses a redirect or a DNS answer must never lead us to: link-local
// (cloud metadata at 169.254.169.254, fe80::/10), unspecified and multicast.
func forbiddenIP(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified()
}

// forbiddenHost reports whether host (no port, brackets allowed) is a forbidden IP literal.
func forbiddenHost(host string) (netip.Addr, bool) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if i := strings.IndexByte(host, '%'); i >= 0 { // zone: fe80::1%eth0
		host = host[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a, forbiddenIP(a)
}

// allowed reports whether ctx explicitly permits dialing a.
func allowed(ctx context.Context, a netip.Addr) bool {
	p, ok := ctx.Value(allowKey{}).(netip.Addr)
	return ok && p == a.Unmap()
}

// dialer returns the DialContext for the transport: forbidden IP literals are refused before
// any dial; with the real net.Dialer, the resolved address is checked again in ControlContext
// so a DNS name pointing at 169.254.169.254 is refused too.
func (c *Client) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	inner := c.o.DialContext
	if inner == nil {
		d := &net.Dialer{Timeout: c.o.DialTimeout, KeepAlive: 30 * time.Second, ControlContext: c.controlDial(), Resolver: c.resolver}
		inner = d.DialContext
	}
	timeout := c.o.DialTimeout
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		if a, bad := forbiddenHost(host); bad && !allowed(ctx, a) {
			return nil, fmt.Errorf("%w: refusing to connect to %s", ErrRedirect, a)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := inner(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newWatchedConn(conn), nil
	}
}

// watchedConn is a dialled connection that remembers when it last received a byte. When an
// attempt times out (no response header, or the no-progress watchdog), the connection it
// used is closed if it has been silent for the whole wait: its path is dead, and with
// HTTP/2 the retry would otherwise be one more stream on it. A connection that is still
// receiving (other streams flowing) is left alone; only the slow stream ends.
type watchedConn struct {
	net.Conn
	lastRead atomic.Int64 // UnixNano of the last Read that returned bytes (or of the dial)
}

func newWatchedConn(c net.Conn) *watchedConn {
	w := &watchedConn{Conn: c}
	w.lastRead.Store(time.Now().UnixNano())
	return w
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

// NetConn exposes the dialled connection.
func (w *watchedConn) NetConn() net.Conn { return w.Conn }

// closeIfSilent closes the connection if it has received nothing since t, and reports
// whether it did.
func (w *watchedConn) closeIfSilent(t time.Time) bool {
	if w == nil || w.lastRead.Load() >= t.UnixNano() {
		return false
	}
	w.Conn.Close()
	return true
}

// watchedOf digs our watchedConn out of the connection a request was given (TLS wraps it).
func watchedOf(c net.Conn) *watchedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	w, _ := c.(*watchedConn)
	return w
}

// controlDial is the net.Dialer hook that sees the resolved address just before connect.
func (c *Client) controlDial() func(ctx context.Context, network, address string, _ syscall.RawConn) error {
	return func(ctx context.Context, network, address string, _ syscall.RawConn) error {
		host, _, _ := net.SplitHostPort(address)
		if a, bad := forbiddenHost(host); bad && !allowed(ctx, a) {
			return fmt.Errorf("%w: refusing to connect to %s", ErrRedirect, a)
		}
		return nil
	}
}

// checkRedirect enforces the redirect policy. Go copies the first request's headers (Range,
// If-Range, Accept-Encoding, user headers) onto every hop; here we drop what must not travel.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	orig := via[0].URL
	target := redactURL(req.URL)
	if len(via) > maxRedirects {
		return fmt.Errorf("%w: more than %d redirects (last to %s)", ErrRedirect, maxRedirects, target)
	}
	switch req.URL.Scheme {
	case "http", "https":
	default:
		return fmt.Errorf("%w: redirect to non-HTTP scheme %q", ErrRedirect, req.URL.Scheme)
	}
	for _, v := range via {
		if v.URL.Scheme == "https" && req.URL.Scheme == "http" {
			return fmt.Errorf("%w: https to http downgrade (to %s)", ErrRedirect, target)
		}
	}
	if a, bad := forbiddenHost(req.URL.Hostname()); bad && !allowed(req.Context(), a) {
		return fmt.Errorf("%w: redirect to forbidden address %s", ErrRedirect, a)
	}
	// The Referer Go adds carries the previous URL's query (a presigned signature).
	req.Header.Del("Referer")
	foreign := false
	for _, v := range append(via[1:], req) {
		if !strings.EqualFold(v.URL.Host, orig.Host) {
			foreign = true
		}
	}
	if foreign {
		for k := range c.o.Header {
			req.Header.Del(k)
		}
		req.Header.Del("Authorization")
		req.Header.Del("Cookie")
		req.Header.Del("Proxy-Authorization")
	}
	return nil
}

// target is one parsed, validated remote URL plus its credentials. Immutable.
type target struct {
	u       *url.URL // userinfo removed; what we request
	auth    string   // "Basic ..." from userinfo, "" if none
	secrets secretSet
	allow   netip.Addr // valid when the original host is a link-local etc. literal
	redact  string     // Redact(u)
	// noHeaders: the Client's user headers are not sent (ProbeWithoutHeaders).
	noHeaders bool
}

func parseTarget(rawURL string, h http.Header) (*target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("fetch: invalid URL %s", Redact(rawURL))
	}
	t := &target{secrets: collectSecrets(u, h)}
	switch u.Scheme {
	case "http", "https":
	default:
		return nil, fmt.Errorf("fetch: unsupported URL scheme %q (only http and https)", u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("fetch: URL has no host: %s", Redact(rawURL))
	}
	if u.User != nil {
		user := u.User.Username()
		pass, _ := u.User.Password()
		r := &http.Request{Header: http.Header{}}
		r.SetBasicAuth(user, pass)
		t.auth = r.Header.Get("Authorization")
	}
	cu := *u
	cu.User = nil
	cu.Fragment, cu.RawFragment = "", ""
	t.u = &cu
	t.redact = redactURL(&cu)
	if a, bad := forbiddenHost(cu.Hostname()); bad {
		t.allow = a.Unmap()
	}
	return t, nil
}

// newRequest builds a request to t with the user's headers and credentials. ctx carries the
// dial permission for an explicitly requested link-local host.
func (c *Client) newRequest(ctx context.Context, method string, t *target) (*http.Request, error) {
	if t.allow.IsValid() {
		ctx = context.WithValue(ctx, allowKey{}, t.allow)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetch: cannot build request for %s", t.redact)
	}
	for k, vv := range c.o.Header {
		if t.noHeaders {
			break
		}
		req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vv...)
	}
	if t.auth != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", t.auth)
	}
	if c.o.UserAgent != "" && req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", c.o.UserAgent)
	}
	// Ask for the bytes as stored: a compressed range cannot be written at an offset.
	req.Header.Set("Accept-Encoding", "identity")
	return req, nil
}

// do waits for a slot of the adaptive concurrency limit (honouring req's ctx), sends req and
// sanitizes any transport error. The slot is held until the response body is closed, and
// the final status tells the limit whether the server is shedding load.
func (c *Client) do(req *http.Request, t *target) (*http.Response, error) {
	lim := c.limitFor(t)
	epoch, err := lim.acquire(req.Context())
	if err != nil {
		return nil, err
	}
	var used atomic.Pointer[connUse]
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		used.Store(&connUse{conn: watchedOf(i.Conn), at: time.Now()})
	}}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := c.hc.Do(req)
	c.observe(resp, err)
	u := used.Load()
	if err != nil {
		c.releaseSlot(lim, epoch, outcomeNeutral)
		if u != nil && req.Context().Err() == nil && u.conn.closeIfSilent(u.at) {
			// Nothing at all arrived since the request went out (a response header
			// timeout on a dead path): the next attempt must not use this connection.
			c.o.Logger.Debug("closed a connection that stayed silent", "url", t.redact)
		}
		return nil, t.secrets.sanitize(err)
	}
	resp.Body = c.countBody(resp.Body)
	sb := &slotBody{ReadCloser: resp.Body, ctx: req.Context(), c: c, lim: lim, epoch: epoch, outcome: outcomeOf(resp.StatusCode)}
	if u != nil {
		sb.conn = u.conn
	}
	resp.Body = sb
	return resp, nil
}

// connUse is the connection a request was given, and when.
type connUse struct {
	conn *watchedConn // nil if not one we dialled
	at   time.Time
}

// stalled is called when the no-progress watchdog ended a transfer on resp: its connection
// is closed too if it has been silent for half the watchdog's window, so that the retry
// dials a new one instead of opening another HTTP/2 stream on a dead path. A connection
// still receiving (other streams, or a trickle) is kept.
func (c *Client) stalled(resp *http.Response, t *target) {
	sb, ok := resp.Body.(*slotBody)
	if ok && sb.conn.closeIfSilent(time.Now().Add(-c.o.StallTimeout/2)) {
		c.o.Logger.Debug("closed a connection that stayed silent", "url", t.redact)
	}
}

// releaseSlot returns a slot to the adaptive limit and says so when the server's answer
// made the Client lower its concurrency.
func (c *Client) releaseSlot(lim *adaptiveLimit, epoch uint64, o outcome) {
	if n := lim.release(epoch, o); n > 0 {
		c.o.Logger.Warn("server is shedding load (429/503): lowering concurrent requests", "limit", n)
	}
}

// limitFor returns the in-flight limit of t's host (as given in the URL, lower-cased), made
// on first use: each host, a mirror among others, gets Connections and sheds load alone.
func (c *Client) limitFor(t *target) *adaptiveLimit {
	host := strings.ToLower(t.u.Host)
	c.limitsMu.Lock()
	defer c.limitsMu.Unlock()
	l := c.limits[host]
	if l == nil {
		l = newAdaptiveLimit(c.o.Connections)
		c.limits[host] = l
	}
	return l
}

// drainTimeout bounds discardSmall's wait for the body of an answer that is
// not wanted (an error status): a few KiB that have not come in that time
// are not worth the connection.
const drainTimeout = time.Second

// discardSmall drains at most a few KiB of a body we do not want, then closes it: a short
// error body lets the connection be reused; a long one is not worth reading.
func discardSmall(resp *http.Response) {
	const limit = 4 << 10
	if resp.ContentLength >= 0 && resp.ContentLength <= limit {
		// A body that does not come is not waited for: closing the body
		// ends the read, and the connection is not reused.
		stop := time.AfterFunc(drainTimeout, func() { resp.Body.Close() })
		defer stop.Stop()
		var b [512]byte
		for n := 0; n < limit; {
			m, err := resp.Body.Read(b[:])
			n += m
			if err != nil {
				break
			}
		}
	}
	resp.Body.Close()
}
