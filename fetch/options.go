package fetch

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	// Connections is the maximum number of connections per host; default 8.
	Connections int
	// RateLimit caps the whole Client at this many bytes/s (body bytes); 0 = unlimited.
	RateLimit int64
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
	// RetryBase and RetryCap shape the full-jitter exponential backoff; defaults 250ms, 30s.
	RetryBase, RetryCap time.Duration
	// RetryAfterCap caps an honoured Retry-After; default 60s.
	RetryAfterCap time.Duration
	// DialContext replaces the network dialer (tests use a recording fake). nil = net.Dialer.
	// Link-local, unspecified and multicast IP literals are refused before it is called.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
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
	// maxHeaderBytes bounds a response header block (a hostile 1 GB header is refused).
	maxHeaderBytes = 1 << 20
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
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	o.Header = o.Header.Clone()
	return o
}
