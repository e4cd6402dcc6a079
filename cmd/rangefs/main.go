// Command rangefs makes a remote file usable before it has arrived: `rangefs
// mount` shows URLs as lazily fetched local files, `rangefs get` downloads
// them in parallel with resume. This package only wires flags, signals and
// exit codes to the fetch, cache and fs packages.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"rangefs/cache"
	"rangefs/fetch"
	"rangefs/fetch/listing"
)

var version = "0.1.0-dev"

// Exit codes, one per failure class, so scripts can tell them apart.
const (
	exitOK          = 0
	exitFailure     = 1 // anything not listed below
	exitUsage       = 2 // bad flags, bad URL
	exitNetwork     = 3 // unreachable, HTTP error status, server without Range support
	exitChanged     = 4 // the remote file changed while we were reading it
	exitChecksum    = 5 // --sha256 mismatch
	exitDiskFull    = 6 // no space for the file or the cache
	exitInterrupted = 130
)

func main() {
	run := func(args []string) int { return run(args, os.Getenv, os.Stdout, os.Stderr) }
	if helperName(os.Args[0]) || looksLikeHelperCall(os.Args[1:]) {
		os.Exit(helperMain(os.Args[1:], os.Stderr, run))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string, env Env, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first Ctrl-C asks for a clean stop; a second one kills at once.
	go func() { <-ctx.Done(); stop() }()
	root := rootCommand(ctx, args, env, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "rangefs: %v%s\n", err, errorHint(err))
		return exitCode(ctx, err)
	}
	return exitOK
}

// exitCode classifies an error into one of the named exit codes, by its
// cause: a local failure is checked before a network one, because every
// syscall.Errno satisfies net.Error.
func exitCode(ctx context.Context, err error) int {
	var ue *usageError
	var se *fetch.StatusError
	var de *daemonError
	var lse *listing.StatusError
	switch {
	case errors.As(err, &de):
		return de.code
	case errors.As(err, &ue):
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.Is(err, errChecksum):
		return exitChecksum
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, errNoSpace):
		return exitDiskFull
	case errors.Is(err, fetch.ErrChanged), errors.Is(err, cache.ErrStale):
		return exitChanged
	case localError(err):
		return exitFailure
	case errors.As(err, &se), errors.Is(err, fetch.ErrRangeIgnored), errors.Is(err, fetch.ErrNoSize),
		errors.Is(err, fetch.ErrGone), errors.Is(err, fetch.ErrRedirect), errors.Is(err, fetch.ErrEncoding),
		errors.Is(err, fetch.ErrBadRange), transportError(err), fetch.IsNetwork(err):
		return exitNetwork
	case errors.As(err, &lse), errors.Is(err, listing.ErrNotListing), errors.Is(err, listing.ErrTooLarge),
		errors.Is(err, listing.ErrRedirect), errors.Is(err, listing.ErrBadListing):
		// A directory the server would not list, or listed badly.
		return exitNetwork
	}
	return exitFailure
}

// localError reports a failure of this machine rather than of the network:
// a file operation (the os package's PathError and LinkError), a write to
// our own output that fetch reports as a WriteError, or an errno that no
// socket gives.
func localError(err error) bool {
	var pe *os.PathError
	var le *os.LinkError
	var we *fetch.WriteError
	if errors.As(err, &pe) || errors.As(err, &le) || errors.As(err, &we) {
		return true
	}
	var errno syscall.Errno
	return errors.As(err, &errno) && !networkErrno(errno)
}

// networkErrno lists the errnos a socket gives when the network or the peer fails.
func networkErrno(e syscall.Errno) bool {
	switch e {
	case syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.ETIMEDOUT,
		syscall.EHOSTUNREACH, syscall.EHOSTDOWN, syscall.ENETUNREACH, syscall.ENETDOWN, syscall.ENETRESET,
		syscall.EPIPE, syscall.EADDRNOTAVAIL, syscall.EPROTO:
		return true
	}
	return false
}

// transportError recognises what the net, net/http and crypto/tls packages
// return: dial, DNS and socket errors, timeouts, and certificate failures.
// localError has already taken the errnos that are not the network's.
func transportError(err error) bool {
	var (
		ne  net.Error
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		rhe tls.RecordHeaderError
	)
	return errors.As(err, &ne) || errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) ||
		errors.As(err, &ci) || errors.As(err, &rhe)
}

// errorHint adds what to do to an error whose cure is a flag.
func errorHint(err error) string {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
	)
	if errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
		return "\nrangefs: the server's TLS certificate could not be verified: give its CA with --cacert FILE, " +
			"or skip the check with --insecure (not for anything that matters)"
	}
	return ""
}

// newLogger logs to stderr at level (what a command shows by default):
// at --log-level when given, else everything with -v, errors only with -q.
// So -q --log-level info hides progress and keeps info logs.
func newLogger(w io.Writer, c *commonConfig, level slog.Level) *slog.Logger {
	switch {
	case c.LogLevel != nil:
		level = *c.LogLevel
	case c.Verbose:
		level = slog.LevelDebug
	case c.Quiet:
		level = slog.LevelError
	}
	o := &slog.HandlerOptions{Level: level}
	if c.LogJSON {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// poolLoad hands fetch's load reports (429 and 503 answers, and the answers
// that show the server coping) to the cache Pool, which alone decides how
// many requests are in flight, by priority. The Pool is made after the
// probe, which tells how many mirrors it serves, so reports before then are
// dropped.
type poolLoad struct{ pool atomic.Pointer[cache.Pool] }

func (l *poolLoad) set(p *cache.Pool) {
	l.pool.Store(p)
	if m := currentMetrics(); m != nil {
		m.addPool(p)
	}
}

func (l *poolLoad) report(ctx context.Context, overloaded bool) {
	if p := l.pool.Load(); p != nil {
		p.ReportLoad(ctx, overloaded)
	}
}

// newClient makes the command's HTTP client; load receives its load reports.
func newClient(c *commonConfig, log *slog.Logger, stderr io.Writer, load *poolLoad) *fetch.Client {
	if c.Insecure {
		fmt.Fprintln(stderr, "rangefs: warning: --insecure: the server's TLS certificate is NOT verified")
	}
	o := fetch.Options{
		Header:              c.Headers,
		Insecure:            c.Insecure,
		Connections:         c.Connections,
		RateLimit:           c.LimitRate,
		Logger:              log,
		UserAgent:           c.UserAgent,
		RootCAs:             c.RootCAs,
		DialTimeout:         c.ConnectTimeout,
		TLSHandshakeTimeout: c.ConnectTimeout,
		MaxAttempts:         c.Retry + 1,
		// Nothing listening is reported at once, as curl does: a fresh
		// probe tries twice, not MaxAttempts times with backoff.
		ProbeRefusedAttempts: 2,
		ProxyURL:             c.Sources.Proxy,
		// A read waiting on a fetch retries until its op timeout, so a
		// server that restarts costs a wait, not an EIO; calls with no
		// deadline (probes, get) keep MaxAttempts.
		RetryUntilDeadline: true,
		OnLoad:             load.report,
	}
	m := currentMetrics()
	if m != nil {
		o.Observer = m
	}
	client := fetch.NewClient(o)
	if m != nil {
		m.addClient(client)
	}
	return client
}

// checkSize applies --max-size to a probed object.
func checkSize(c *commonConfig, o *fetch.Object) error {
	if c.MaxSize > 0 && o.Size > c.MaxSize {
		return fmt.Errorf("%s is %s, more than --max-size %s", o.URL(), humanBytes(o.Size), humanBytes(c.MaxSize))
	}
	return nil
}
