package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Sentinel errors. Every error returned by this package matches at most one of them with
// errors.Is, and no error string contains a URL secret (userinfo, query values, header values).
var (
	// ErrRangeIgnored: the server answered 200 to a Range request, or a 206 without Content-Range.
	ErrRangeIgnored = errors.New("server ignored the Range request")
	// ErrChanged: the remote file is no longer the version pinned at Probe (validator or size
	// differs, or 416). Its concrete type has a RemoteChanged() bool method returning true, so
	// packages that must not import fetch can recognise it.
	ErrChanged error = &changedError{}
	// ErrGone: 404 or 410. A *StatusError with those codes also matches it; from Fetch or
	// Stream it also reports RemoteChanged() true (the pinned version is gone).
	ErrGone = errors.New("remote file is gone")
	// ErrNoSize: neither HEAD nor a ranged GET told the size.
	ErrNoSize = errors.New("server did not tell the file size")
	// ErrEncoding: the server applied a Content-Encoding other than identity.
	ErrEncoding = errors.New("server sent an encoded (compressed) body")
	// ErrBadRange: a 206 whose Content-Range is not the one asked for, is malformed, or a
	// multipart/byteranges answer. Retried.
	ErrBadRange = errors.New("server sent a different or malformed range")
	// ErrRedirect: a redirect was refused (too many, https->http, non-http scheme, or a
	// link-local/unspecified/multicast target).
	ErrRedirect = errors.New("redirect refused")
)

// changedError is the concrete type of ErrChanged. The method lets cache/ detect a remote
// change through errors.As without importing this package.
type changedError struct{}

func (*changedError) Error() string       { return "remote file changed" }
func (*changedError) RemoteChanged() bool { return true }

// StatusError is an HTTP answer with an unexpected status code. URL is redacted.
// For 404 and 410 it also matches ErrGone with errors.Is. Its message adds what a user can
// do about a 401 or 403 (a presigned URL that expired answers 403).
type StatusError struct {
	Code int
	URL  string // redacted: no userinfo, query values replaced

	retryAfter time.Duration // parsed Retry-After (already capped); 0 when absent
	pinned     bool          // answered to Fetch or Stream, after Probe pinned a version
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("HTTP %d %s from %s", e.Code, http.StatusText(e.Code), e.URL)
	switch e.Code {
	case http.StatusUnauthorized:
		msg += " (credentials missing or refused: check the Authorization header or the user:password in the URL)"
	case http.StatusForbidden:
		msg += " (the URL may have expired or be unauthorised: a presigned or token URL needs a fresh one)"
	}
	return msg
}

// Is makes errors.Is(err, ErrGone) true for 404 and 410.
func (e *StatusError) Is(target error) bool {
	return target == ErrGone && isGoneCode(e.Code)
}

// RemoteChanged reports true for a 404 or 410 answered to Fetch or Stream: the version
// pinned at Probe no longer exists, so a handle bound to it is stale (cache/ recognises the
// method without importing this package, as for ErrChanged) and retrying cannot help. For
// any other code, and for a 404 to Probe (nothing was pinned yet), it reports false.
func (e *StatusError) RemoteChanged() bool { return e.pinned && isGoneCode(e.Code) }

func isGoneCode(code int) bool { return code == http.StatusNotFound || code == http.StatusGone }

// WriteError wraps an error returned by the caller's io.Writer. It is never retried.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "write: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// errStall: the no-progress watchdog ended an attempt.
var errStall = errors.New("no progress: transfer stalled or too slow")

// errShortBody: the body ended before the promised bytes arrived.
var errShortBody = errors.New("body shorter than promised")

// redactedError carries a transport error whose text has been scrubbed of secrets. Unwrap
// gives the (URL-redacted) original so errors.Is/As keep working.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// IsNetwork reports whether err is a failure of the network or of the server rather than of
// this machine, the caller, or the remote file's version: a transfer that stalled or kept
// ending short until the attempts ran out, a malformed or unexpected answer, a piece no
// mirror served intact (ErrPieceHash), an HTTP error status, a refused redirect, or a
// transport error (dial, DNS, reset, timeout, TLS). It is false for ErrChanged, a
// *WriteError and a cancelled or expired caller context.
func IsNetwork(err error) bool {
	var we *WriteError
	var se *StatusError
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, ErrChanged), errors.As(err, &we),
		errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, errStall), errors.Is(err, errShortBody), errors.Is(err, ErrBadRange),
		errors.Is(err, ErrRangeIgnored), errors.Is(err, ErrNoSize), errors.Is(err, ErrGone),
		errors.Is(err, ErrEncoding), errors.Is(err, ErrRedirect), errors.Is(err, ErrPieceHash), errors.As(err, &se):
		return true
	case errors.As(err, &ne):
		return true
	}
	return permanentTransportError(err) || closedBeforeAnswer(err)
}
