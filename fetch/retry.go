package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// retryable is the single retry decision of this package. Remote-change, gone, range-ignored,
// encoding, redirect and write errors are final; so are 4xx answers except 408/429, TLS
// certificate failures and unknown hosts. Transient transport failures, timeouts, stalls,
// short bodies, 5xx (except 501) and ErrBadRange are retried.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	var we *WriteError
	var se *StatusError
	switch {
	case errors.As(err, &we):
		return false
	case errors.Is(err, ErrChanged), errors.Is(err, ErrGone), errors.Is(err, ErrRangeIgnored),
		errors.Is(err, ErrEncoding), errors.Is(err, ErrRedirect), errors.Is(err, ErrNoSize):
		return false
	case errors.Is(err, ErrBadRange), errors.Is(err, errStall), errors.Is(err, errShortBody):
		return true
	case errors.As(err, &se):
		switch {
		case se.Code == http.StatusRequestTimeout, se.Code == http.StatusTooManyRequests:
			return true
		case se.Code >= 500 && se.Code != http.StatusNotImplemented:
			return true
		}
		return false
	case errors.Is(err, context.Canceled):
		// Only the caller's ctx cancels requests (the watchdog reports errStall), so this
		// is the caller giving up.
		return false
	}
	if permanentTransportError(err) {
		return false
	}
	// Everything else came from the network: resets, EOF, refused, timeouts, DNS hiccups,
	// HTTP/2 GOAWAY. MaxAttempts bounds the cost of a wrong guess.
	return true
}

// permanentTransportError recognises transport failures that a retry cannot fix.
func permanentTransportError(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		rhe tls.RecordHeaderError
		dns *net.DNSError
	)
	switch {
	case errors.As(err, &cve), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci), errors.As(err, &rhe):
		return true
	case errors.As(err, &dns):
		return dns.IsNotFound
	}
	msg := err.Error()
	// Go reports these as plain errors; matching the text is the only way.
	return strings.Contains(msg, "unsupported protocol scheme") ||
		strings.Contains(msg, "server gave HTTP response to HTTPS client") ||
		strings.Contains(msg, "malformed HTTP") ||
		// A header block over maxHeaderBytes: asking again would only cost another one.
		strings.Contains(msg, "server response headers exceeded")
}

// backoff returns the full-jitter delay before retry number failures (1-based):
// uniform in [0, min(cap, base*2^(failures-1))).
func backoff(base, cap time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < cap; i++ {
		d *= 2
	}
	if d > cap {
		d = cap
	}
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// parseRetryAfter reads a Retry-After value (delay-seconds or HTTP-date) relative to now.
// It returns 0 when absent or invalid, and at most limit.
func parseRetryAfter(v string, now time.Time, limit time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(limit/time.Second)+1 {
			return limit
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0
	}
	if d <= 0 {
		return 0
	}
	return min(d, limit)
}

// retryDelay picks the wait before the next attempt: an honoured Retry-After if the last
// error carried one, else full-jitter backoff.
func (c *Client) retryDelay(err error, failures int) time.Duration {
	var se *StatusError
	if errors.As(err, &se) && se.retryAfter > 0 {
		return se.retryAfter
	}
	return backoff(c.o.RetryBase, c.o.RetryCap, max(failures, 1))
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
