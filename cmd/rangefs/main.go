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
	"syscall"

	"rangefs/cache"
	"rangefs/fetch"
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

const mainUsage = `rangefs makes a remote file usable before it has arrived.

Usage:
  rangefs get [flags] URL                 download in parallel, resumable
  rangefs mount [flags] URL... MOUNTPOINT show URLs as lazily fetched files
  rangefs status [MOUNTPOINT]             show what is cached
  rangefs version

Run 'rangefs COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, env Env, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first Ctrl-C asks for a clean stop; a second one kills at once.
	go func() { <-ctx.Done(); stop() }()
	var err error
	switch args[0] {
	case "get":
		var c *getConfig
		if c, err = parseGet(args[1:], env, stderr); err == nil {
			err = runGet(ctx, c, stderr)
		}
	case "mount":
		var c *mountConfig
		if c, err = parseMount(args[1:], env, stderr); err == nil {
			err = runMount(ctx, c, stderr)
		}
	case "status":
		var c *statusConfig
		if c, err = parseStatus(args[1:], env, stderr); err == nil {
			err = runStatus(ctx, c, stdout)
		}
	case "version", "--version":
		fmt.Fprintln(stdout, "rangefs", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "rangefs: unknown command %q\n\n%s", args[0], mainUsage)
		return exitUsage
	}
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "rangefs: %v\n", err)
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
	switch {
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

// newLogger logs to stderr at level (what a command shows by default),
// everything with -v, errors only with -q.
func newLogger(w io.Writer, c *commonConfig, level slog.Level) *slog.Logger {
	switch {
	case c.Verbose:
		level = slog.LevelDebug
	case c.Quiet:
		level = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func newClient(c *commonConfig, log *slog.Logger, stderr io.Writer) *fetch.Client {
	if c.Insecure {
		fmt.Fprintln(stderr, "rangefs: warning: --insecure: the server's TLS certificate is NOT verified")
	}
	return fetch.NewClient(fetch.Options{
		Header:      c.Headers,
		Insecure:    c.Insecure,
		Connections: c.Connections,
		RateLimit:   c.LimitRate,
		ProxyURL:    c.Sources.Proxy,
		Logger:      log,
	})
}

// checkSize applies --max-size to a probed object.
func checkSize(c *commonConfig, o *fetch.Object) error {
	if c.MaxSize > 0 && o.Size > c.MaxSize {
		return fmt.Errorf("%s is %s, more than --max-size %s", o.URL(), humanBytes(o.Size), humanBytes(c.MaxSize))
	}
	return nil
}
