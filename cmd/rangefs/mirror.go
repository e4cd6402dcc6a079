package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/spf13/pflag"

	"rangefs/fetch"
	"rangefs/fetch/metalink"
)

// sourceFlags are the flags that say where one file's bytes come from besides its URL:
// more mirrors of it, a Metalink, a forward proxy.
type sourceFlags struct {
	Mirrors  []string
	Metalink string
	Proxy    *url.URL
	// err is the first bad value given to one of these flags. It is reported by
	// probeSources as a usage error rather than by pflag, whose message would repeat the
	// value, secrets (a proxy password, a signed mirror URL) included.
	err error
}

// registerSourceFlags adds --mirror, --metalink and --proxy to fs.
func registerSourceFlags(fs *pflag.FlagSet, c *sourceFlags) {
	fs.Var(mirrorValue{c}, "mirror", "another URL of the same file (repeatable): chunks are fetched from all of them at once")
	fs.StringVar(&c.Metalink, "metalink", "", "read mirrors, size and SHA-256 piece hashes from the Metalink 4 `FILE` (.meta4; the URL is one more mirror); every chunk is verified. A FILE.meta4 argument instead of the URL does the same")
	fs.Var(proxyValue{c}, "proxy", "send every request through this forward proxy (http://host:port), whatever HTTP(S)_PROXY and NO_PROXY say")
}

type mirrorValue struct{ c *sourceFlags }

func (v mirrorValue) Set(s string) error {
	u, err := parseURL(s)
	if err != nil {
		v.c.fail(usagef("--mirror: %v", err))
		return nil
	}
	v.c.Mirrors = append(v.c.Mirrors, u)
	return nil
}

func (v mirrorValue) String() string {
	if v.c == nil {
		return ""
	}
	var r []string
	for _, m := range v.c.Mirrors {
		r = append(r, fetch.Redact(m))
	}
	return strings.Join(r, ",")
}

func (mirrorValue) Type() string { return "URL" }

type proxyValue struct{ c *sourceFlags }

func (v proxyValue) Set(s string) error {
	u, err := fetch.ParseProxyURL(s)
	if err != nil {
		v.c.fail(usagef("--proxy: %v", err))
		return nil
	}
	v.c.Proxy = u
	return nil
}

func (v proxyValue) String() string {
	if v.c == nil || v.c.Proxy == nil {
		return ""
	}
	return fetch.Redact(v.c.Proxy.String())
}

func (proxyValue) Type() string { return "URL" }

func (c *sourceFlags) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// isMetalinkArg reports whether a URL argument is a local Metalink file.
func isMetalinkArg(arg string) bool {
	l := strings.ToLower(arg)
	return !strings.Contains(l, "://") && !strings.HasPrefix(l, "@") &&
		(strings.HasSuffix(l, ".meta4") || strings.HasSuffix(l, ".metalink"))
}

// sources is what probeSources found out for one file.
type sources struct {
	obj    *fetch.Object
	sha256 string // the Metalink's whole-file hash, or ""
}

// probeSources probes the file that arg (a URL or a Metalink path) names, with the
// --mirror and --metalink flags, and returns the Object to read it through: the plain
// Probe result for one URL, else the view of a fetch.Mirrors over every mirror that
// answered. A mirror that cannot be probed is skipped with a warning; one of another size
// is refused.
func probeSources(ctx context.Context, client *fetch.Client, cc *commonConfig, arg string, stderr io.Writer) (*sources, error) {
	s := &cc.Sources
	if s.err != nil {
		return nil, s.err
	}
	var urls []string
	var opts fetch.MirrorOptions
	out := &sources{}
	ml := s.Metalink
	if isMetalinkArg(arg) {
		if ml != "" {
			return nil, usagef("give the Metalink as the argument or as --metalink, not both")
		}
		ml = arg
	} else {
		urls = append(urls, arg)
	}
	if ml != "" {
		f, err := loadMetalink(ml)
		if err != nil {
			return nil, err
		}
		for _, u := range f.URLs {
			urls = append(urls, u.URL)
		}
		opts = fetch.MirrorOptions{Size: max(f.Size, 0), SHA256: f.SHA256, Name: path.Base(f.Name)}
		if f.Pieces != nil {
			opts.Pieces = &fetch.Pieces{Length: f.Pieces.Length, SHA256: f.Pieces.SHA256}
		}
		out.sha256 = f.SHA256
		if len(f.Skipped) > 0 && !cc.Quiet {
			fmt.Fprintf(stderr, "rangefs: %s: ignored what rangefs does not use: %s\n", ml, strings.Join(f.Skipped, ", "))
		}
	}
	urls = append(urls, s.Mirrors...)
	urls = dedupe(urls)
	if len(urls) == 1 && ml == "" {
		o, err := client.Probe(ctx, urls[0])
		if err != nil {
			return nil, err
		}
		out.obj = o
		return out, nil
	}

	objs := make([]*fetch.Object, len(urls))
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Go(func() {
			// -H headers are meant for the first URL's host: a mirror elsewhere, maybe
			// named by a third party's Metalink, must not receive credentials.
			if sameHost(u, urls[0]) {
				objs[i], errs[i] = client.Probe(ctx, u)
			} else {
				objs[i], errs[i] = client.ProbeWithoutHeaders(ctx, u)
			}
		})
	}
	wg.Wait()
	var usable []*fetch.Object
	for i, o := range objs {
		if errs[i] != nil {
			if ctx.Err() != nil {
				return nil, errs[i]
			}
			if !cc.Quiet {
				fmt.Fprintf(stderr, "rangefs: warning: mirror %s skipped: %v\n", fetch.Redact(urls[i]), errs[i])
			}
			continue
		}
		usable = append(usable, o)
	}
	if len(usable) == 0 {
		return nil, fmt.Errorf("no mirror of the file answered (%d tried); the first said: %w", len(urls), firstErr(errs))
	}
	opts.Logger = newLogger(stderr, cc, slog.LevelWarn)
	ms, err := fetch.NewMirrors(usable, opts)
	if err != nil {
		return nil, err
	}
	if opts.Pieces == nil && len(usable) > 1 && !cc.Quiet {
		fmt.Fprintf(stderr, "rangefs: warning: %d mirrors and no piece hashes: a mirror that serves other bytes "+
			"of the same size cannot be detected; use --sha256 (get) or a Metalink with piece hashes\n", len(usable))
	}
	out.obj = ms.Object()
	return out, nil
}

// probeMount is mount's probe: each argument is one file; --mirror and --metalink
// describe one file, so they need exactly one argument.
func probeMount(ctx context.Context, client *fetch.Client, c *mountConfig, stderr io.Writer) ([]*fetch.Object, error) {
	s := &c.Sources
	many := len(s.Mirrors) > 0 || s.Metalink != ""
	anyMetalink := false
	for _, u := range c.URLs {
		anyMetalink = anyMetalink || isMetalinkArg(u)
	}
	if s.err == nil && !many && !anyMetalink {
		return probeAll(ctx, client, c.URLs)
	}
	if many && len(c.URLs) != 1 {
		return nil, usagef("--mirror and --metalink describe one file: give exactly one URL (got %d)", len(c.URLs))
	}
	objs := make([]*fetch.Object, len(c.URLs))
	errs := make([]error, len(c.URLs))
	var wg sync.WaitGroup
	for i, u := range c.URLs {
		wg.Go(func() {
			var src *sources
			if src, errs[i] = probeSources(ctx, client, &c.commonConfig, u, stderr); errs[i] == nil {
				objs[i] = src.obj
			}
		})
	}
	wg.Wait()
	if err := firstErr(errs); err != nil {
		return nil, err
	}
	return objs, nil
}

// poolSize is the cache's connection budget for objs: Connections per server.
func poolSize(connections int, objs ...*fetch.Object) int {
	n := 1
	for _, o := range objs {
		n = max(n, o.Sources())
	}
	return connections * n
}

// loadMetalink reads a Metalink file that describes exactly one file.
func loadMetalink(p string) (*metalink.File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, usagef("metalink: %v", err)
	}
	defer f.Close()
	m, err := metalink.Parse(f)
	if err != nil {
		return nil, usagef("%s: %v", p, err)
	}
	if len(m.Files) != 1 {
		return nil, usagef("%s describes %d files; rangefs reads one file per Metalink", p, len(m.Files))
	}
	return &m.Files[0], nil
}

// sameHost reports whether two URLs name the same host and port.
func sameHost(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host)
}

func dedupe(urls []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, u := range urls {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
