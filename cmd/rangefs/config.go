package main

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"rangefs/cmd/internal/bytesize"
	"rangefs/fetch"
	rfs "rangefs/fs"
)

// usageError marks a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// commonConfig holds the flags `get` and `mount` share.
type commonConfig struct {
	Connections int
	ChunkSize   int64
	Headers     http.Header
	Insecure    bool
	MaxSize     int64
	LimitRate   int64
	Verbose     bool
	Quiet       bool

	UserAgent      string
	Retry          int           // retries after a failed attempt (curl's --retry)
	ConnectTimeout time.Duration // TCP connect and TLS handshake
	RootCAs        *x509.CertPool
	netrc          string // the netrc file to take credentials from, "" for none

	LogLevel *slog.Level // nil: the command's default
	LogJSON  bool

	Sources sourceFlags // --mirror, --metalink, --proxy (mirror.go)
}

type getConfig struct {
	commonConfig
	URL       string
	Output    string // a file, "-" for stdout, or a directory
	OutputDir string
	SHA256    string
	Force     bool
	// Jobs is what to download: the URL with its output and checksum, or
	// every entry of the -i list.
	Jobs      []getJob
	InputFile string
	Parallel  int // files downloaded at once with -i
	// VolatileQuery: a partial download is resumed whatever the URL's query
	// (cacheIdentity), as a mount keys its cache with --volatile-query.
	VolatileQuery bool
}

// getJob is one download: a URL, where it goes ("" for the URL's name) and
// the SHA-256 it must have ("" for none).
type getJob struct {
	URL, Output, SHA256 string
}

type mountConfig struct {
	commonConfig
	URLs       []string
	Mountpoint string
	CacheDir   string
	Name       string
	// VolatileQuery keys the cache by the URL without its query, so a
	// presigned URL replaced by a fresh one finds its cached data.
	VolatileQuery bool
	NoPrefetch    bool
	OpTimeout     time.Duration
	AllowOther    bool
	DebugFUSE     bool
	// KernelReadAhead is fs.Options.KernelReadAhead (0: its default).
	KernelReadAhead int64
	// NoPassthrough keeps every read in this process even when the kernel
	// could read a fully cached file directly.
	NoPassthrough bool
	// NoDirectIO is fs.Options.NoDirectIO.
	NoDirectIO bool
	// NoSplice is fs.Options.NoSplice.
	NoSplice bool
	Budget   budgetConfig

	// Daemon runs the mount in the background; the command returns once
	// the mount answers (or with the error that stopped it).
	Daemon     bool
	DaemonWait time.Duration
	LogFile    string
	// Env is what env.NAME=VALUE mount options set for the process.
	Env map[string]string
	// Ownership is the owner and umask the files are shown with.
	Ownership     rfs.Ownership
	AllowNonEmpty bool
	MetricsAddr   string // HOST:PORT of the Prometheus endpoint, "" for none

	treeConfig
	archiveConfig
}

type statusConfig struct {
	Target   string // a mount point, or "" with CacheDir
	CacheDir string
	Timeout  time.Duration // longest wait for one answer from a mount
}

// Env is how the parsers see the environment, so tests can supply their own.
type Env func(string) string

// commonFlags registers the shared flags on fs and returns a function that
// finishes parsing them into c once fs.Parse has run.
func commonFlags(fs *pflag.FlagSet, c *commonConfig) func(env Env) error {
	var chunk, maxSize, rate string
	var headers []string
	var headerFile string
	fs.IntVarP(&c.Connections, "connections", "j", 8, "parallel HTTP connections to the server")
	fs.StringVar(&chunk, "chunk-size", "1MiB", "cache and request granularity, a power of two from 64KiB to 64MiB")
	fs.StringArrayVarP(&headers, "header", "H", nil, "extra request header 'Name: value' (repeatable; sent only to the URL's own host)")
	fs.StringVar(&headerFile, "header-file", "", "read headers from FILE, one 'Name: value' per line (keeps tokens out of the process list)")
	fs.BoolVar(&c.Insecure, "insecure", false, "do not verify the server's TLS certificate (prints a warning)")
	fs.StringVar(&maxSize, "max-size", "", "refuse remote files larger than SIZE")
	fs.StringVar(&rate, "limit-rate", "", "limit the total download rate to RATE bytes per second (e.g. 5M)")
	fs.BoolVarP(&c.Verbose, "verbose", "v", false, "log requests, retries and cache decisions")
	fs.BoolVarP(&c.Quiet, "quiet", "q", false, "print nothing but errors")
	var cacert string
	var netrc bool
	fs.StringVarP(&c.UserAgent, "user-agent", "A", "rangefs/"+version, "User-Agent header sent with every request")
	fs.IntVar(&c.Retry, "retry", 5, "retry a failed request N times before giving up (each attempt that makes progress resets the count; a server refusing the first connection is tried once more, as curl does)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "longest to wait for a TCP connection and TLS handshake")
	fs.StringVar(&cacert, "cacert", "", "verify the server's certificate against the CA certificates in this PEM FILE")
	fs.BoolVar(&netrc, "netrc", false, "take the user name and password for the URL's host from ~/.netrc ($NETRC)")
	registerSourceFlags(fs, &c.Sources)
	return func(env Env) error {
		var err error
		if c.Retry < 0 || c.Retry > 100 {
			return usagef("--retry must be between 0 and 100, not %d", c.Retry)
		}
		if c.ConnectTimeout <= 0 {
			return usagef("--connect-timeout must be positive")
		}
		if cacert != "" {
			if c.RootCAs, err = loadCACert(cacert); err != nil {
				return err
			}
		}
		if netrc {
			c.netrc = netrcPath(env)
		}
		if c.Connections < 1 || c.Connections > 64 {
			return usagef("--connections must be between 1 and 64, not %d", c.Connections)
		}
		if c.ChunkSize, err = parseSize(chunk); err != nil {
			return usagef("--chunk-size: %v", err)
		}
		if c.ChunkSize < 64<<10 || c.ChunkSize > 64<<20 || c.ChunkSize&(c.ChunkSize-1) != 0 {
			return usagef("--chunk-size must be a power of two from 64KiB to 64MiB, not %s", chunk)
		}
		if maxSize != "" {
			if c.MaxSize, err = parseSize(maxSize); err != nil {
				return usagef("--max-size: %v", err)
			}
		}
		if rate != "" {
			if c.LimitRate, err = parseSize(rate); err != nil {
				return usagef("--limit-rate: %v", err)
			}
		}
		c.Headers = http.Header{}
		add := func(where string, lines []string) error {
			for i, l := range lines {
				if err := addHeader(c.Headers, l); err != nil {
					return usagef("%s %d: %v", where, i+1, err)
				}
			}
			return nil
		}
		if err := add("-H argument", headers); err != nil {
			return err
		}
		if v := env("RANGEFS_HEADERS"); v != "" {
			if err := add("RANGEFS_HEADERS line", strings.Split(v, "\n")); err != nil {
				return err
			}
		}
		if headerFile != "" {
			data, err := os.ReadFile(headerFile)
			if err != nil {
				return usagef("--header-file: %v", err)
			}
			if err := add("--header-file line", strings.Split(string(data), "\n")); err != nil {
				return err
			}
		}
		return nil
	}
}

// addHeader parses one "Name: value" line. Blank lines and #comments (from a
// header file) are skipped. Neither the line nor the value is ever echoed in
// an error: a malformed line may be nothing but a token.
func addHeader(h http.Header, line string) error {
	line = strings.TrimRight(line, "\r")
	if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
		return nil
	}
	name, value, ok := strings.Cut(line, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return errors.New("a header must have the form 'Name: value'")
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return errors.New("the header name has a character header names may not have")
		}
	}
	value = strings.TrimSpace(value)
	for _, r := range value {
		if r < ' ' && r != '\t' || r == 0x7f {
			return fmt.Errorf("header %s: the value has a control character", name)
		}
	}
	switch http.CanonicalHeaderKey(name) {
	case "Range", "If-Range", "Accept-Encoding", "Host", "Content-Length":
		return fmt.Errorf("header %s is set by rangefs itself", name)
	}
	h.Add(name, value)
	return nil
}

// parseSize is bytesize.Parse, the size syntax every command shares.
func parseSize(s string) (int64, error) { return bytesize.Parse(s) }

// parseURL accepts an http(s) URL, or @FILE naming a file whose first line is
// the URL, so that presigned URLs need not appear in the process list.
func parseURL(arg string) (string, error) {
	if isMetalinkArg(arg) {
		return arg, nil // a local Metalink file, read by probeSources
	}
	raw := arg
	if strings.HasPrefix(arg, "@") {
		f, err := os.Open(arg[1:])
		if err != nil {
			return "", usagef("URL file: %v", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		raw = ""
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				raw = l
				break
			}
		}
		if raw == "" {
			return "", usagef("URL file %s is empty", arg[1:])
		}
	}
	if strings.TrimSpace(raw) == "" {
		return "", usagef("the URL is empty")
	}
	if !strings.Contains(raw, "://") {
		// example.com/file, or host:port/file, which url.Parse reads as a
		// scheme "host": name what is missing.
		if strings.ContainsAny(raw, "@?#") { // may hold a secret: do not echo it
			return "", usagef("bad URL: it has no scheme; put https:// or http:// in front")
		}
		return "", usagef("bad URL: it has no scheme; did you mean https://%s ?", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, secrets included: say less.
		if strings.Contains(err.Error(), "invalid port") {
			return "", usagef("bad URL: its port is not a number from 1 to 65535")
		}
		return "", usagef("bad URL: it does not parse as a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", usagef("bad URL: only http:// and https:// are supported, not %q", u.Scheme+":")
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", usagef("bad URL: it has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", usagef("bad URL: port %s is not a number from 1 to 65535", p)
		}
	}
	return raw, nil
}

const getUsage = `Download URL with parallel Range requests into a file in the current
directory (or -o FILE). The download resumes where it stopped when the same
command runs again after Ctrl-C, a crash or a dropped network; the partial
state lives beside the output in FILE.rangefs/ and the finished file is
renamed into place, so FILE is never seen half-written.
`

// getFlags registers get's flags on fs and returns the function that, once
// fs has parsed, checks them with the positional arguments into c.
func getFlags(fs *pflag.FlagSet, c *getConfig) func(env Env, args []string) error {
	finish := commonFlags(fs, &c.commonConfig)
	var checksum string
	fs.StringVarP(&c.Output, "output", "o", "", "save to FILE, into DIR/ (an existing directory), or '-' for stdout (default: the URL's file name in the current directory)")
	fs.StringVarP(&c.OutputDir, "output-dir", "d", "", "save into DIR (created if missing) under the URL's file name")
	fs.StringVarP(&c.InputFile, "input-file", "i", "", "download every URL listed in FILE, one per line ('-' for stdin); an indented 'out=NAME' or 'checksum=sha-256=HEX' line after a URL applies to it")
	fs.IntVar(&c.Parallel, "parallel", 3, "with -i, how many files download at once (they share --connections)")
	fs.StringVar(&c.SHA256, "sha256", "", "verify the result against this SHA-256 (hex); on mismatch nothing is left at the output")
	fs.StringVar(&checksum, "checksum", "", "verify the result: TYPE=DIGEST, where TYPE is sha-256 (as aria2c)")
	fs.BoolVar(&c.Force, "force", false, "overwrite an existing output file")
	fs.BoolVar(&c.VolatileQuery, "volatile-query", false, "the query string changes between runs (a token or signature): resume a partial download whatever the query (automatic for S3, GCS and Azure signed URLs)")
	fs.BoolP("continue", "c", true, "resume a partial download (always on; accepted for curl and wget habits)")
	return func(env Env, args []string) error {
		if err := finish(env); err != nil {
			return err
		}
		var err error
		if checksum != "" {
			sum, err := parseChecksum(checksum)
			if err != nil {
				return err
			}
			if c.SHA256 != "" && c.SHA256 != sum {
				return usagef("--sha256 and --checksum disagree")
			}
			c.SHA256 = sum
		}
		if c.SHA256 != "" {
			if c.SHA256, err = parseSHA256(c.SHA256); err != nil {
				return usagef("--sha256 %v", err)
			}
		}
		if c.Parallel < 1 || c.Parallel > 64 {
			return usagef("--parallel must be between 1 and 64, not %d", c.Parallel)
		}
		if c.OutputDir != "" && c.Output != "" {
			return usagef("give -o or --output-dir, not both")
		}
		if c.InputFile != "" {
			switch {
			case len(args) != 0:
				return usagef("-i takes the URLs from its file: give no URL arguments with it")
			case c.Output != "":
				return usagef("-o names one file; with -i use --output-dir, or out=NAME lines in the list")
			case c.SHA256 != "":
				return usagef("--sha256 is for one file; with -i put checksum=sha-256=HEX lines in the list")
			}
			if c.Jobs, err = readURLList(c.InputFile, env); err != nil {
				return err
			}
			return nil
		}
		if len(args) != 1 {
			return usagef("get takes exactly one URL (got %d arguments); see rangefs get --help", len(args))
		}
		if c.URL, err = parseURL(args[0]); err != nil {
			return err
		}
		c.Jobs = []getJob{{URL: c.URL, Output: c.Output, SHA256: c.SHA256}}
		return nil
	}
}

// parseGet parses get's arguments (without the word "get"); help goes to out.
func parseGet(args []string, env Env, out io.Writer) (*getConfig, error) {
	return parseWith(args, out, func(run func(*getConfig) error) *cobra.Command { return getCommand(env, run) })
}

const mountUsage = `Show each URL as a read-only file in MOUNTPOINT. Reads fetch only the chunks
they touch; a background prefetcher fills in the rest; everything fetched is
kept in the cache and survives unmount, crash and reboot. Runs in the
foreground until Ctrl-C, SIGTERM, or rangefs unmount MOUNTPOINT; with
--daemon (the default under mount(8), as mount.fuse.rangefs for fstab and
mount -t fuse.rangefs) it returns once the mount answers.
`

// mountFlags registers mount's flags on fs and returns the function that,
// once fs has parsed, checks them with the positional arguments into c.
func mountFlags(fs *pflag.FlagSet, c *mountConfig) func(env Env, args []string) error {
	finish := commonFlags(fs, &c.commonConfig)
	fs.StringVar(&c.CacheDir, "cache-dir", "", "where cached chunks live (default $XDG_CACHE_HOME/rangefs or ~/.cache/rangefs)")
	fs.StringVar(&c.Name, "name", "", "file name in the mount (only with one URL)")
	fs.BoolVar(&c.VolatileQuery, "volatile-query", false, "the query string changes between runs (a signature): key the cache without it (automatic for S3, GCS and Azure signed URLs)")
	fs.BoolVar(&c.NoPrefetch, "no-prefetch", false, "fetch only what is read (plus read-ahead); no background fill")
	fs.DurationVar(&c.OpTimeout, "op-timeout", 30*time.Second, "longest a read waits for the network before it fails with EIO")
	fs.BoolVar(&c.AllowOther, "allow-other", false, "let other users read the mount (implies default_permissions)")
	fs.BoolVar(&c.NoPassthrough, "no-passthrough", false, "never let the kernel read fully cached files directly (FUSE passthrough)")
	fs.BoolVar(&c.NoDirectIO, "no-direct-io", false, "let the kernel page-cache files not yet fully cached too (by default their reads come to rangefs at the program's own size, with no second copy in memory)")
	fs.BoolVar(&c.NoSplice, "no-splice", false, "copy cached bytes through rangefs on every read (by default, with root's CAP_SYS_ADMIN or CAP_SYS_RESOURCE, reads that fit in a pipe are spliced from the cache file to the kernel)")
	fs.BoolVar(&c.DebugFUSE, "debug-fuse", false, "log every FUSE request")
	fs.Var(sizeFlag{&c.KernelReadAhead}, "kernel-read-ahead", "how far the kernel reads ahead of a program reading through the page cache (a fully cached file, or any with --no-direct-io), whole KiB (default "+
		humanBytes(rfs.DefaultKernelReadAhead)+"; rangefs reads ahead itself by what each handle consumed; needs root)")
	archiveFlags(fs, &c.archiveConfig)
	budgetFlags(fs, &c.Budget)
	var umask string
	fs.Uint32Var(&c.Ownership.UID, "uid", uint32(os.Getuid()), "show the files as owned by this user ID (default: the mounting user)")
	fs.Uint32Var(&c.Ownership.GID, "gid", uint32(os.Getgid()), "show the files as owned by this group ID (default: the mounting user's group)")
	fs.StringVar(&umask, "umask", "0", "octal permission bits to take off the files' 0444 and directories' 0555 (e.g. 027)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://HOST:PORT/metrics")
	fs.BoolVar(&c.AllowNonEmpty, "allow-non-empty", false, "mount over a directory that is not empty (its files are hidden while mounted)")
	var opts []string
	var foreground bool
	var logLevel, logFormat string
	fs.StringArrayVarP(&opts, "options", "o", nil, "mount options as in fstab: name=value,... for any flag (cache_dir=/x,connections=16); ro, _netdev, nofail, x-systemd.* and the like are ignored; env.NAME=VALUE sets an environment variable")
	fs.BoolVar(&c.Daemon, "daemon", false, "run in the background; return once the mount answers, or fail with the reason (the default under mount(8))")
	fs.BoolVar(&foreground, "foreground", false, "stay in the foreground even under mount(8)")
	fs.DurationVar(&c.DaemonWait, "daemon-wait", time.Minute, "with --daemon, longest to wait for the mount to answer")
	fs.StringVar(&c.LogFile, "log-file", "", "append log records to FILE instead of stderr")
	fs.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (default warn; -v means debug and -q error, unless this is given)")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	treeArgs := treeFlags(fs, c)
	return func(env Env, args []string) error {
		var err error
		if c.Env, err = applyOptions(fs, opts); err != nil {
			return err
		}
		env = overlayEnv(c.Env, env)
		if foreground {
			c.Daemon = false
		}
		m, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(umask, "0o"), "0"), 8, 32)
		if strings.Trim(umask, "0o") == "" {
			m, err = 0, nil
		}
		if err != nil || m > 0o777 {
			return usagef("--umask must be octal permission bits such as 022, not %q", umask)
		}
		c.Ownership.Umask = uint32(m)
		if c.KernelReadAhead%1024 != 0 || c.KernelReadAhead > 64<<20 {
			return usagef("--kernel-read-ahead must be whole KiB up to 64MiB, such as 32KiB or 1MiB, not %s", humanBytes(c.KernelReadAhead))
		}
		if c.MetricsAddr != "" {
			_, port, err := net.SplitHostPort(c.MetricsAddr)
			if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
				return usagef("--metrics-addr must be HOST:PORT, such as 127.0.0.1:9300, not %q", c.MetricsAddr)
			}
		}
		if c.DaemonWait <= 0 {
			return usagef("--daemon-wait must be positive")
		}
		if logLevel != "" {
			var l slog.Level
			if err := l.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level must be debug, info, warn or error, not %q", logLevel)
			}
			c.LogLevel = &l
		}
		switch logFormat {
		case "text":
		case "json":
			c.LogJSON = true
		default:
			return usagef("--log-format must be text or json, not %q", logFormat)
		}
		if err := finish(env); err != nil {
			return err
		}
		if c.Budget.MaxSize > 0 && c.Budget.MaxSize < c.ChunkSize {
			return usagef("--cache-max-size %s is smaller than one chunk (--chunk-size %s), so nothing could be cached; give at least the chunk size, or a smaller --chunk-size",
				humanBytes(c.Budget.MaxSize), humanBytes(c.ChunkSize))
		}
		if err := treeArgs(args); err != nil {
			return err
		}
		if err := checkDistinct(c.URLs, c.VolatileQuery); err != nil {
			return err
		}
		if c.Name != "" && len(c.URLs) != 1 {
			return usagef("--name works with exactly one URL")
		}
		if c.Name != "" && (strings.ContainsAny(c.Name, "/\x00") || c.Name == "." || c.Name == "..") {
			return usagef("--name %q is not a plain file name", c.Name)
		}
		if c.OpTimeout <= 0 {
			return usagef("--op-timeout must be positive")
		}
		if c.CacheDir == "" {
			c.CacheDir = defaultCacheDir(env)
		}
		return nil
	}
}

// parseMount parses mount's arguments (without the word "mount"); help goes to out.
func parseMount(args []string, env Env, out io.Writer) (*mountConfig, error) {
	return parseWith(args, out, func(run func(*mountConfig) error) *cobra.Command { return mountCommand(env, run) })
}

// checkDistinct refuses a remote file given twice to one mount: both would
// share one cache directory, which one process cannot open twice. Two URLs
// are the same file when they differ only in what the cache identity leaves
// out: the case of the scheme or host, a default port, user info, a
// fragment, or a query that does not key the cache (a signature, or any
// query with --volatile-query); it mirrors fetch's Object.Identity.
func checkDistinct(urls []string, volatileQuery bool) error {
	first := map[string]int{}
	for i, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			return usagef("bad URL: it does not parse as a URL")
		}
		key := url.URL{Scheme: strings.ToLower(u.Scheme), Host: strings.ToLower(u.Host),
			Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
		key.Host = strings.TrimSuffix(key.Host, map[string]string{"http": ":80", "https": ":443"}[key.Scheme])
		if key.Path == "" {
			key.Path = "/"
		}
		if volatileQuery || signedQuery(raw) {
			key.RawQuery = ""
		}
		k := key.String()
		if j, ok := first[k]; ok {
			return sameFileTwice(urls[j], raw, j, i)
		}
		first[k] = i
	}
	return nil
}

// sameFileTwice is the usage error for URL arguments i and j (0-based) that
// name one remote file.
func sameFileTwice(a, b string, i, j int) error {
	if a == b {
		return usagef("%s is given more than once (URL arguments %d and %d); give each file once",
			fetch.Redact(a), i+1, j+1)
	}
	return usagef("%s and %s are the same remote file, given more than once (URL arguments %d and %d); give each file once",
		fetch.Redact(a), fetch.Redact(b), i+1, j+1)
}

const statusUsage = `Show what is cached: for each file of a running mount, or for each object in a
cache directory (default: the default cache directory).
`

func statusFlags(fs *pflag.FlagSet, c *statusConfig) func(env Env, args []string) error {
	fs.StringVar(&c.CacheDir, "cache-dir", "", "cache directory to inspect")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "longest to wait for the mount to answer one request (a stopped daemon never does)")
	return func(env Env, args []string) error {
		switch {
		case c.Timeout <= 0:
			return usagef("--timeout must be positive")
		case len(args) > 1:
			return usagef("status takes at most one mount point")
		case len(args) == 1 && c.CacheDir != "":
			return usagef("give a mount point or --cache-dir, not both")
		case len(args) == 1:
			c.Target = args[0]
		case c.CacheDir == "":
			c.CacheDir = defaultCacheDir(env)
		}
		return nil
	}
}

// parseStatus parses status's arguments (without the word "status"); help goes to out.
func parseStatus(args []string, env Env, out io.Writer) (*statusConfig, error) {
	return parseWith(args, out, func(run func(*statusConfig) error) *cobra.Command { return statusCommand(env, run) })
}

func defaultCacheDir(env Env) string {
	if x := env("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "rangefs")
	}
	if h := env("HOME"); h != "" {
		return filepath.Join(h, ".cache", "rangefs")
	}
	if os.Geteuid() == 0 {
		// mount(8) and systemd start helpers without HOME.
		return "/var/cache/rangefs"
	}
	return filepath.Join(os.TempDir(), "rangefs-cache")
}
