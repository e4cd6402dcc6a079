// Command rangefs-testserver serves one file over HTTP with Range support, for demos and
// benchmarks of rangefs:
//
//	rangefs-testserver --addr 127.0.0.1:0 [--file PATH | --size SIZE --seed N] [--rate BYTES_PER_SEC_PER_CONN]
//
// It prints the file's URL (one line) on stdout and serves until SIGINT or SIGTERM. Without
// --file it serves deterministic pseudo-random content (fetchtest.Pattern), so no big file is
// needed; --sha256 prints its checksum on stderr.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/pflag"

	"rangefs/cmd/internal/bytesize"
	"rangefs/fetch/fetchtest"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

type config struct {
	addr string
	file string
	size int64
	seed uint64
	rate int64
	sum  bool
}

// parseArgs parses the command line into a config; it never exits.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	var c config
	var size string
	fs := pflag.NewFlagSet("rangefs-testserver", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:0", "listen address")
	fs.StringVar(&c.file, "file", "", "serve this file (default: generated pattern content)")
	fs.StringVar(&size, "size", "1GiB", "size of the generated content (e.g. 64MiB, 1G, 12345)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the generated content")
	fs.Int64Var(&c.rate, "rate", 0, "cap each TCP connection at this many bytes/s (0 = unlimited)")
	fs.BoolVar(&c.sum, "sha256", false, "print the generated content's sha256 on stderr before serving")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.file != "" && fs.Changed("size") {
		return c, errors.New("--file and --size are exclusive")
	}
	if c.rate < 0 {
		return c, errors.New("--rate must be >= 0")
	}
	n, err := bytesize.Parse(size)
	if err != nil {
		return c, err
	}
	c.size = n
	return c, nil
}

func run(args []string, stdout, stderr io.Writer, stop <-chan os.Signal) int {
	c, err := parseArgs(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "rangefs-testserver:", err)
		return exitUsage
	}
	var (
		content io.ReaderAt
		size    int64
		path    = "/pattern.bin"
	)
	if c.file != "" {
		f, err := os.Open(c.file)
		if err != nil {
			fmt.Fprintln(stderr, "rangefs-testserver:", err)
			return exitError
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			fmt.Fprintln(stderr, "rangefs-testserver: not a regular file:", c.file)
			return exitError
		}
		content, size, path = f, st.Size(), "/"+filepath.Base(c.file)
	} else {
		content, size = fetchtest.Pattern(c.size, c.seed), c.size
		if c.sum {
			fmt.Fprintf(stderr, "sha256 %s  size %d  seed %d\n", fetchtest.PatternSHA256(c.size, c.seed), c.size, c.seed)
		}
	}
	srv, err := newServer(content, size, path, c)
	if err != nil {
		fmt.Fprintln(stderr, "rangefs-testserver:", err)
		return exitError
	}
	defer srv.Close()
	fmt.Fprintln(stdout, srv.URL())
	<-stop
	return exitOK
}

// newServer turns fetchtest's listen panic into an error.
func newServer(content io.ReaderAt, size int64, path string, c config) (srv *fetchtest.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return fetchtest.NewServer(content, size, fetchtest.WithAddr(c.addr), fetchtest.WithPath(path),
		fetchtest.WithConnRate(c.rate)), nil
}

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, stop))
}
