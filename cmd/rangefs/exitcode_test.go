package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/fetch"
	"rangefs/fetch/fetchtest"
	"rangefs/fetch/listing"
)

// Every exit code against an error produced by a real operation: the local
// file system, a loopback socket, the fetch client against the test server,
// the cache. A local errno must never pass for a network failure (every
// syscall.Errno satisfies net.Error).
func TestExitCodeOfRealCauses(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	srv, _ := patternServer(t, 1<<20, 41)
	client := fetch.NewClient(fetch.Options{MaxAttempts: 1}) // fail at once: the cause is what matters here
	defer client.Close()

	// must runs a real operation and returns the error it gave; an operation
	// that unexpectedly succeeds fails the test (the case would prove nothing).
	must := func(what string, err error) error {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error, so the case proves nothing", what)
		}
		return err
	}
	probeErr := func(ctx context.Context, url string, c *fetch.Client) error {
		_, err := c.Probe(ctx, url)
		return err
	}

	listErr := func(url string) error {
		l, err := listing.NewHTTP(url, listing.HTTPOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.List(live, "")
		return err
	}

	type tc struct {
		name string
		ctx  context.Context
		err  error
		want int
	}
	cases := []tc{
		// exitUsage
		{"bad flag", live, must("parseGet", func() error { _, err := parseGet([]string{"--frobnicate", "x"}, noEnv, io.Discard); return err }()), exitUsage},
		{"bad URL", live, must("parseMount", func() error {
			_, err := parseMount([]string{"ftp://127.0.0.1/x", dir}, noEnv, io.Discard)
			return err
		}()), exitUsage},

		// exitFailure: local causes
		{"missing mount point", live, must("stat", func() error { _, err := os.Stat(filepath.Join(dir, "missing")); return err }()), exitFailure},
		{"status of a missing directory", live, must("status", func() error {
			_, err := statusMount(live, filepath.Join(dir, "missing"), time.Second)
			return err
		}()), exitFailure},
		{"name too long", live, must("create", func() error {
			_, err := os.Create(filepath.Join(dir, strings.Repeat("n", 300)))
			return err
		}()), exitFailure},
		{"file exists", live, must("mkdir", func() error {
			os.Mkdir(filepath.Join(dir, "d"), 0o700)
			return os.Mkdir(filepath.Join(dir, "d"), 0o700)
		}()), exitFailure},
		{"rename onto a directory", live, must("rename", func() error {
			os.WriteFile(filepath.Join(dir, "f"), nil, 0o600)
			os.Mkdir(filepath.Join(dir, "full"), 0o700)
			os.WriteFile(filepath.Join(dir, "full", "x"), nil, 0o600)
			return os.Rename(filepath.Join(dir, "f"), filepath.Join(dir, "full"))
		}()), exitFailure},
		{"file too large", live, must("truncate", os.Truncate(filepath.Join(dir, "f"), 1<<62)), exitFailure},
		{"write to a closed pipe", live, must("write", func() error {
			r, w, err := os.Pipe()
			if err != nil {
				return nil
			}
			r.Close()
			defer w.Close()
			_, err = w.Write([]byte("x"))
			return err
		}()), exitFailure},
		{"bare local errno", live, must("syscall", func() error { return syscall.Rmdir(filepath.Join(dir, "f")) }()), exitFailure},
		{"cache in use", live, must("second open", func() error {
			cdir := filepath.Join(dir, "cache")
			m := cache.Meta{Size: 10, ChunkSize: 1 << 16, URL: "http://127.0.0.1/x"}
			f, err := cache.Open(cdir, m, offline{}, cache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = cache.Open(cdir, m, offline{}, cache.Options{})
			return err
		}()), exitFailure},
		{"cancel without a signal", live, must("probe", probeErr(done, srv.URL(), client)), exitFailure},

		// exitNetwork
		{"HTTP 404", live, must("probe", probeErr(live, srv.URLFor("/missing"), client)), exitNetwork},
		{"listing of a missing directory", live, must("list", listErr(srv.URLFor("/missing/"))), exitNetwork},
		{"connection refused", live, must("probe", func() error {
			dead := fetchtest.NewSilentServer()
			dead.Close()
			return probeErr(live, dead.URL("http", "/x"), client)
		}()), exitNetwork},
		{"dial refused", live, must("dial", func() error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			_, err = net.Dial("tcp", addr)
			return err
		}()), exitNetwork},
		{"read timeout", live, must("read", func() error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			_, err = c.Read(make([]byte, 1))
			return err
		}()), exitNetwork},
		{"untrusted certificate", live, must("probe", func() error {
			tls, _ := patternServer(t, 1<<10, 42, fetchtest.WithTLS())
			return probeErr(live, tls.URL(), client)
		}()), exitNetwork},
		{"range ignored", live, must("checkRanges", func() error {
			s, _ := patternServer(t, 1<<20, 43)
			s.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
			o, err := client.Probe(live, s.URL())
			if err != nil {
				t.Fatal(err)
			}
			return checkRanges(live, o)
		}()), exitNetwork},

		// exitChanged
		{"remote changed", live, must("fetch", func() error {
			s, _ := patternServer(t, 1<<20, 44)
			o, err := client.Probe(live, s.URL())
			if err != nil {
				t.Fatal(err)
			}
			s.SetContent(fetchtest.DefaultPath, fetchtest.Pattern(1<<20, 45), 1<<20)
			return o.Fetch(live, 0, 1<<16, io.Discard)
		}()), exitChanged},

		// exitChecksum
		{"checksum", live, must("checkSHA256", func() error {
			p := filepath.Join(dir, "sum")
			os.WriteFile(p, []byte("abc"), 0o600)
			return checkSHA256(live, p, strings.Repeat("0", 64))
		}()), exitChecksum},

		// exitInterrupted
		{"interrupted", done, must("probe", probeErr(done, srv.URL(), client)), exitInterrupted},
	}

	// Causes that need root: a read-only file system and a full one.
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o700)
	if err := syscall.Mount("tmpfs", ro, "tmpfs", syscall.MS_RDONLY, "size=64k"); err != nil {
		t.Logf("skipping the read-only and disk-full cases: cannot mount a tmpfs here (%v)", err)
	} else {
		defer syscall.Unmount(ro, syscall.MNT_DETACH)
		cases = append(cases, tc{"read-only target", live, must("create", func() error {
			_, err := os.Create(filepath.Join(ro, "out"))
			return err
		}()), exitFailure})
		full := filepath.Join(dir, "full-fs")
		os.Mkdir(full, 0o700)
		if err := syscall.Mount("tmpfs", full, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
		defer syscall.Unmount(full, syscall.MNT_DETACH)
		cases = append(cases, tc{"disk full", live, must("write", os.WriteFile(filepath.Join(full, "big"), make([]byte, 1<<20), 0o600)), exitDiskFull})
	}

	for _, c := range cases {
		if got := exitCode(c.ctx, fmt.Errorf("wrapped: %w", c.err)); got != c.want {
			t.Errorf("%s: exitCode = %d, want %d (error %T: %v)", c.name, got, c.want, c.err, c.err)
		}
	}
}

// The real binary: local failures exit 1, not the network's 3.
func TestLocalErrorsExitOne(t *testing.T) {
	srv, _ := patternServer(t, 1<<20, 46)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		say  string
	}{
		{"status of a missing directory", []string{"status", filepath.Join(dir, "nonexistent")}, "no such file"},
		{"missing mount point", []string{"mount", "--cache-dir", t.TempDir(), srv.URL(), filepath.Join(dir, "nonexistent")}, "no such file"},
		{"output name too long", []string{"get", "-q", "-o", strings.Repeat("n", 300), srv.URL()}, "file name too long"},
	} {
		r := rangefs(t, dir, tc.args...)
		if r.code != exitFailure || !strings.Contains(r.stderr, tc.say) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d mentioning %q", tc.name, r.code, r.stderr, exitFailure, tc.say)
		}
	}
}
