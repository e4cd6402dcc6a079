package listing

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Entry is one name in one directory level. It is a plain value: the caller owns it.
type Entry struct {
	// Name is one path component: never "", "." or "..", never contains '/' or NUL.
	Name  string
	IsDir bool
	// URL is absolute: for a file, the http(s) URL to probe and fetch; for a directory, the
	// URL its listing is read from (http(s) for an index page, s3://BUCKET/PREFIX/ for S3);
	// "" for a manifest directory.
	URL string
	// Size is the byte count, -1 when unknown. It is a hint unless SizeExact: an HTML page
	// prints "12M" or "1.2K"; the opener must probe before trusting it.
	Size      int64
	SizeExact bool
	// ModTime is zero when unknown. From an HTML page it is the printed, minute-precision
	// time in UTC (index pages rarely say their zone): a hint, like Size.
	ModTime time.Time
	// ETag is the validator as the server gave it (S3 quotes it), "" when none.
	ETag string
	// SHA256 is the lowercase hex digest a manifest declared, "" when none.
	SHA256 string
}

// Lister lists one directory level. Implementations are safe for concurrent use and keep
// no listing between calls: caching, refresh and laziness are the caller's.
type Lister interface {
	// List returns the entries of dir, sorted by Name, each Name once. dir is a
	// slash-separated path below the root: "" is the root, "a/b" a directory two levels down.
	List(ctx context.Context, dir string) ([]Entry, error)
}

// Errors. Each error returned by this package matches at most one of them with errors.Is
// (an HTTP answer with an unexpected status is a *StatusError instead).
var (
	// ErrNotListing: the answer is not a directory listing this package can read (a file,
	// or an unknown format). The URL may still be a file.
	ErrNotListing = errors.New("not a directory listing")
	// ErrTooLarge: a listing exceeded a bound (Options.MaxBody, MaxEntries, MaxDepth, or
	// the S3 page cap).
	ErrTooLarge = errors.New("listing exceeds a limit")
	// ErrRedirect: a redirect was refused (a loop, too many hops, another scheme, an
	// https-to-http downgrade or a forbidden address).
	ErrRedirect = errors.New("listing redirect refused")
	// ErrNotDir: the path names a file, or nothing, in a manifest.
	ErrNotDir = errors.New("not a directory")
	// ErrBadListing: the server's answer is malformed (broken JSON or XML, an S3 token
	// that repeats or never ends).
	ErrBadListing = errors.New("malformed listing")
)

// Options are the bounds and plumbing shared by every lister. The zero value is usable.
type Options struct {
	// Logger receives one warning per skip reason per listing; nil = discard.
	Logger *slog.Logger
	// MaxBody caps the bytes read from one listing answer (after decompression), each S3
	// page apart; default 64 MiB. An index page spends roughly 100 bytes an entry, so a
	// directory of more than about half a million entries needs a higher cap or a manifest.
	MaxBody int64
	// MaxEntries caps the entries of one directory; default 1,000,000.
	MaxEntries int
	// MaxDepth caps the components of a listed dir, so a server-side symlink loop cannot
	// make a tree without end; default 64.
	MaxDepth int
	// Timeout bounds one List call, every page and redirect included; default 2 minutes.
	Timeout time.Duration
	// UserAgent is sent as the User-Agent of every listing request that has none among
	// its headers, as fetch sends its own with every probe and read; "" = Go's default.
	UserAgent string
}

const (
	defaultMaxBody    = 64 << 20
	defaultMaxEntries = 1_000_000
	defaultMaxDepth   = 64
	defaultTimeout    = 2 * time.Minute
)

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBody <= 0 {
		o.MaxBody = defaultMaxBody
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = defaultMaxEntries
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = defaultMaxDepth
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	return o
}

// splitDir checks a List argument and returns its components.
func (o Options) splitDir(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	parts := strings.Split(dir, "/")
	for _, p := range parts {
		if badName(p) != "" {
			return nil, errors.New("listing: invalid directory path " + strconv.Quote(dir))
		}
	}
	if len(parts) > o.MaxDepth {
		return nil, &limitError{what: "directory depth", limit: int64(o.MaxDepth)}
	}
	return parts, nil
}

// limitError is an ErrTooLarge that names the bound.
type limitError struct {
	what  string
	limit int64
}

func (e *limitError) Error() string {
	return "listing: " + e.what + " exceeds the limit of " + strconv.FormatInt(e.limit, 10)
}
func (e *limitError) Is(target error) bool { return target == ErrTooLarge }

// maxNameBytes is the longest name the kernel takes from a FUSE directory listing
// (FUSE_NAME_MAX, 1024 before Linux 6.15, 4095 since): a longer one makes it refuse the
// whole directory's getdents with EIO. Names of 256 bytes and more work in the mount,
// though no local file system can take such a copy.
const maxNameBytes = 1024

// badName returns why a server-given name cannot be a file name, or "" when it can.
func badName(name string) string {
	switch {
	case name == "":
		return "empty name"
	case name == "." || name == "..":
		return "dot name"
	case strings.ContainsRune(name, '/'):
		return "name contains '/'"
	case strings.ContainsRune(name, 0):
		return "name contains NUL"
	case len(name) > maxNameBytes:
		return "name longer than 1024 bytes"
	}
	return ""
}

// skips gathers the entries one listing skipped, so that a hostile page with 100,000 bad
// names costs one log record per reason, not 100,000.
type skips struct {
	reasons []string // in first-seen order
	count   map[string]int
	example map[string]string
}

func (s *skips) add(reason, example string) {
	if s.count == nil {
		s.count, s.example = map[string]int{}, map[string]string{}
	}
	if s.count[reason] == 0 {
		s.reasons = append(s.reasons, reason)
		if len(example) > 120 {
			example = example[:120] + "…"
		}
		s.example[reason] = example
	}
	s.count[reason]++
}

// log writes one warning per reason. where is a redacted URL or a path.
func (s *skips) log(l *slog.Logger, where string) {
	for _, r := range s.reasons {
		l.Warn("listing: skipped entries", "dir", where, "reason", r, "count", s.count[r],
			"example", strconv.Quote(s.example[r]))
	}
}

// finish sorts es by name and keeps one entry per name. The rule: a directory beats a file
// of the same name; among entries of one kind the first the server gave wins. A later
// duplicate with the same URL is the same entry (index pages often link a name twice, from
// its icon and its text): it only fills in hints the first lacked, without a warning.
func finish(es []Entry, sk *skips) []Entry {
	slices.SortStableFunc(es, func(a, b Entry) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		switch {
		case a.IsDir == b.IsDir:
			return 0
		case a.IsDir:
			return -1
		}
		return 1
	})
	out := es[:0]
	for _, e := range es {
		if n := len(out); n > 0 && out[n-1].Name == e.Name {
			last := &out[n-1]
			if last.IsDir == e.IsDir && last.URL == e.URL {
				if last.Size < 0 && e.Size >= 0 {
					last.Size, last.SizeExact = e.Size, e.SizeExact
				}
				if last.ModTime.IsZero() {
					last.ModTime = e.ModTime
				}
				continue
			}
			sk.add("duplicate name", e.Name)
			continue
		}
		out = append(out, e)
	}
	return slices.Clip(out)
}
