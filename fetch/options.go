package fetch

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Options configures a Client. The zero value is usable: every zero field takes the default
// named in its comment. Options is copied by NewClient; later changes have no effect.
type Options struct {
	// Header holds user headers (e.g. Authorization). They are sent only to the host of the
	// URL given to Probe and dropped on any redirect hop to another host. Values are secrets:
	// they never appear in logs or errors.
	Header http.Header
	// Insecure skips TLS certificate verification. The caller prints the warning.
	Insecure bool
	// Connections is the maximum number of connections per host and of requests the Client
	// has in flight per host (each mirror of a file gets its own); default 8. A 429 or 503
	// answer lowers that host's in-flight bound (halved, at least 1) and a run of successes
	// raises it back by one at a time up to Connections.
	Connections int
	// RateLimit caps the whole Client at this many bytes/s (body bytes); 0 = unlimited.
	RateLimit int64
	// OnLoad, if set, hands the decision of how many requests to have in flight to the
	// caller (a scheduler that also orders them by priority, as cache.Pool does): the Client
	// then never lowers its own bound below Connections, and instead calls OnLoad once per
	// answer that says something about the server's load, with the request's ctx (a child
	// of the ctx given to Fetch or Probe) and whether the server was shedding load (429 or
	// 503). It is called when the answer's body is closed, for the answers of every host
	// (mirrors included); it must be quick and safe for concurrent use. Retries,
	// Retry-After and backoff stay the Client's.
	OnLoad func(ctx context.Context, overloaded bool)
	// Logger receives debug/warn records about attempts and retries; nil = discard.
	// It is never given a secret.
	Logger *slog.Logger

	DialTimeout           time.Duration // default 10s
	TLSHandshakeTimeout   time.Duration // default 10s
	ResponseHeaderTimeout time.Duration // default 15s

	// StallTimeout is the no-progress watchdog on a response body: receiving fewer than
	// MinProgress bytes within this window ends the attempt (it is then retried). Default 15s.
	StallTimeout time.Duration
	// MinProgress is the byte count that must arrive per StallTimeout window; default 16 KiB,
	// so a 1 KB/s trickle ends the attempt.
	MinProgress int64
	// MaxAttempts bounds consecutive attempts without progress per Fetch/Probe/Stream call;
	// an attempt that delivered at least MinProgress bytes (or finished) resets the count.
	// Default 6.
	MaxAttempts int
	// RetryUntilDeadline makes a call whose ctx has a deadline (a demand read bounded by the
	// op timeout) retry transient failures until that deadline instead of stopping after
	// MaxAttempts, so that a server restarting for a few seconds costs the read time, not
	// an error. A call without a deadline (a first Probe, a prefetch) still stops after
	// MaxAttempts. Final errors (see retryable) are returned at once either way.
	RetryUntilDeadline bool
	// RetryBase and RetryCap shape the full-jitter exponential backoff; defaults 250ms, 30s.
	RetryBase, RetryCap time.Duration
	// RetryAfterCap caps an honoured Retry-After; default 60s.
	RetryAfterCap time.Duration
	// DialContext replaces the network dialer (tests use a recording fake). nil = net.Dialer,
	// which also refuses a host name that resolves to a forbidden address, just before
	// connecting. Link-local, unspecified and multicast IP literals are refused before
	// DialContext is called; a replacement receives host names unresolved and must check
	// what they resolve to itself.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Proxy chooses the proxy for a request, as http.Transport.Proxy does; nil =
	// http.ProxyFromEnvironment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY; never for loopback).
	// A caching proxy in front of many clients becomes their shared chunk tier: ranges are
	// sent exactly as asked, so chunk-aligned requests stay aligned. Behind a proxy, the
	// proxy resolves host names: the dial-time address check sees only the proxy.
	Proxy func(*http.Request) (*url.URL, error)

	// UserAgent is sent as User-Agent on every request unless Header sets one; "" leaves
	// Go's default. It is not a secret and survives redirects.
	UserAgent string
	// RootCAs, when set, replaces the system's certificate authorities for TLS
	// verification (curl's --cacert).
	RootCAs *x509.CertPool
	// ProbeRefusedAttempts, when positive, bounds the attempts of a Probe whose every
	// failure so far was a refused connection: nothing listens there, which a long backoff
	// rarely changes, so a command line tool reports it at once. 0 = MaxAttempts.
	ProbeRefusedAttempts int
	// Observer, when set, is told of every response, transport failure and retry.
	Observer Observer
	// ProxyURL, when set, sends every request through this forward proxy (http, https or
	// socks5; parse it with ParseProxyURL), loopback included and whatever HTTP(S)_PROXY and
	// NO_PROXY say: the user named it. It replaces Proxy. Its userinfo becomes the proxy's
	// credentials and is treated as a secret, as the URL's own.
	ProxyURL *url.URL
}

// ParseProxyURL checks a forward proxy URL given by the user: http://, https:// or
// socks5:// with a host (a bare host:port means http://). Errors never repeat the URL's
// userinfo.
func ParseProxyURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("proxy URL %s does not parse", Redact(raw))
	}
	switch u.Scheme {
	case "http", "https", "socks5":
	default:
		return nil, fmt.Errorf("proxy URL %s: scheme %q is not http, https or socks5", redactURL(u), u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("proxy URL %s has no host", redactURL(u))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("proxy URL %s: a proxy is a scheme, host and port only", redactURL(u))
	}
	return u, nil
}

const (
	defaultConnections   = 8
	defaultDialTimeout   = 10 * time.Second
	defaultTLSTimeout    = 10 * time.Second
	defaultHeaderTimeout = 15 * time.Second
	defaultStallTimeout  = 15 * time.Second
	defaultMinProgress   = 16 << 10
	defaultMaxAttempts   = 6
	defaultRetryBase     = 250 * time.Millisecond
	defaultRetryCap      = 30 * time.Second
	defaultRetryAfterCap = 60 * time.Second

	// maxRedirects is the number of redirect hops followed per request.
	maxRedirects = 5
	// maxHeaderBytes bounds a response header block, so that a hostile or broken server
	// sending an endless header costs at most this much memory and is refused at once
	// (net/http's default is 10 MB). Real object stores send a few KiB, so 64 KiB leaves
	// ample room; ResponseHeaderTimeout bounds a header that arrives slowly instead.
	maxHeaderBytes = 64 << 10
)

// withDefaults returns o with zero fields replaced by their defaults.
func (o Options) withDefaults() Options {
	setD := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Connections <= 0 {
		o.Connections = defaultConnections
	}
	setD(&o.DialTimeout, defaultDialTimeout)
	setD(&o.TLSHandshakeTimeout, defaultTLSTimeout)
	setD(&o.ResponseHeaderTimeout, defaultHeaderTimeout)
	setD(&o.StallTimeout, defaultStallTimeout)
	setD(&o.RetryBase, defaultRetryBase)
	setD(&o.RetryCap, defaultRetryCap)
	setD(&o.RetryAfterCap, defaultRetryAfterCap)
	if o.MinProgress <= 0 {
		o.MinProgress = defaultMinProgress
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = defaultMaxAttempts
	}
	if o.ProxyURL != nil {
		pu := *o.ProxyURL
		o.ProxyURL = &pu
		o.Proxy = http.ProxyURL(o.ProxyURL)
	}
	if o.Proxy == nil {
		o.Proxy = http.ProxyFromEnvironment
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	o.Header = o.Header.Clone()
	return o
}
