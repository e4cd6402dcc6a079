package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/fetch"
)

func noEnv(string) string { return "" }

func TestAddHeader(t *testing.T) {
	for _, tc := range []struct {
		line, name, value string
		bad               bool
	}{
		{"Authorization: Bearer abc", "Authorization", "Bearer abc", false},
		{"X-Thing:v", "X-Thing", "v", false},
		{"  # a comment", "", "", false},
		{"", "", "", false},
		{"NoColon", "", "", true},
		{": value", "", "", true},
		{"Bad Name: v", "", "", true},
		{"Range: bytes=0-1", "", "", true},
		{"X-A: one\x00two", "", "", true},
		{"X-A: one\x1btwo", "", "", true},
		{"X-A: tab\tok", "X-A", "tab\tok", false},
	} {
		h := http.Header{}
		err := addHeader(h, tc.line)
		if (err != nil) != tc.bad {
			t.Errorf("addHeader(%q) error = %v, bad=%v", tc.line, err, tc.bad)
			continue
		}
		if tc.name != "" && h.Get(tc.name) != tc.value {
			t.Errorf("addHeader(%q): %s = %q, want %q", tc.line, tc.name, h.Get(tc.name), tc.value)
		}
	}
	// A rejected line never shows in the message: it may be a token.
	for _, line := range []string{"X-Token: sec\nret", "Bearer secret", "Bad secret: v", "X-A: sec\x01ret"} {
		err := addHeader(http.Header{}, line)
		if err == nil || strings.Contains(err.Error(), "sec") {
			t.Errorf("addHeader(%q): error %v, want one that does not quote the secret", line, err)
		}
	}
	env := func(k string) string {
		if k == "RANGEFS_HEADERS" {
			return "X-A: 1\nBearer TOKEN123"
		}
		return ""
	}
	_, err := parseGet([]string{"http://h/f"}, env, io.Discard)
	if err == nil || strings.Contains(err.Error(), "TOKEN123") || !strings.Contains(err.Error(), "RANGEFS_HEADERS line 2") {
		t.Errorf("bad header in the environment: %v", err)
	}
}

func TestParseGet(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "url")
	os.WriteFile(urlFile, []byte("\nhttps://h.example/f.iso?sig=abc\n"), 0o600)
	hdrFile := filepath.Join(dir, "headers")
	os.WriteFile(hdrFile, []byte("# token\nAuthorization: Bearer t0k\n"), 0o600)

	c, err := parseGet([]string{"-j", "4", "--chunk-size", "4M", "-o", "x.iso", "--header-file", hdrFile, "@" + urlFile}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Connections != 4 || c.ChunkSize != 4<<20 || c.Output != "x.iso" || c.URL != "https://h.example/f.iso?sig=abc" ||
		c.Headers.Get("Authorization") != "Bearer t0k" {
		t.Errorf("parsed %+v", c)
	}
	env := func(k string) string {
		if k == "RANGEFS_HEADERS" {
			return "X-A: 1\nX-B: 2"
		}
		return ""
	}
	c, err = parseGet([]string{"http://h/f"}, env, io.Discard)
	if err != nil || c.Headers.Get("X-A") != "1" || c.Headers.Get("X-B") != "2" || c.Connections != 8 || c.ChunkSize != 1<<20 {
		t.Errorf("defaults/env: %+v %v", c, err)
	}

	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"ftp://h/f"},
		{"file:///etc/passwd"},
		{"http://"},
		{"-j", "0", "http://h/f"},
		{"-j", "1000", "http://h/f"},
		{"--chunk-size", "3M", "http://h/f"},
		{"--chunk-size", "32K", "http://h/f"},
		{"--chunk-size", "128M", "http://h/f"},
		{"--sha256", "xyz", "http://h/f"},
		{"--no-such-flag", "http://h/f"},
		{"@" + filepath.Join(dir, "missing"), "x"},
	} {
		_, err := parseGet(args, noEnv, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseGet(%q) = %v, want a usage error", args, err)
		}
	}
	if _, err := parseGet([]string{"--help"}, noEnv, io.Discard); !errors.Is(err, errHelp) {
		t.Errorf("--help: %v", err)
	}
}

func TestParseMount(t *testing.T) {
	env := func(k string) string { return map[string]string{"HOME": "/home/u"}[k] }
	c, err := parseMount([]string{"--no-prefetch", "--op-timeout", "5s", "http://h/a", "http://h/b", "mnt"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.URLs) != 2 || c.Mountpoint != "mnt" || !c.NoPrefetch || c.OpTimeout != 5*time.Second ||
		c.CacheDir != filepath.Join("/home/u", ".cache", "rangefs") {
		t.Errorf("parsed %+v", c)
	}
	if _, err := parseMount([]string{"--chunk-size", "8MiB", "--cache-max-size", "8MiB", "http://h/a", "m"}, env, io.Discard); err != nil {
		t.Errorf("a cap of one chunk: %v", err)
	}
	xdg := func(k string) string { return map[string]string{"HOME": "/home/u", "XDG_CACHE_HOME": "/x"}[k] }
	if c, _ := parseMount([]string{"http://h/a", "m"}, xdg, io.Discard); c.CacheDir != filepath.Join("/x", "rangefs") {
		t.Errorf("XDG cache dir: %s", c.CacheDir)
	}
	for _, args := range [][]string{
		{"mnt"},
		{"--name", "x", "http://h/a", "http://h/b", "m"},
		{"--name", "a/b", "http://h/a", "m"},
		{"--op-timeout", "0s", "http://h/a", "m"},
		{"gopher://h/a", "m"},
		{"--chunk-size", "16MiB", "--cache-max-size", "8MiB", "http://h/a", "m"}, // not one chunk fits
	} {
		_, err := parseMount(args, env, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseMount(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestUniqueName(t *testing.T) {
	taken := map[string]bool{}
	var got []string
	for _, n := range []string{"a.iso", "a.iso", "a.iso", "b", "b"} {
		got = append(got, uniqueName(taken, n))
	}
	if want := "a.iso a-2.iso a-3.iso b b-2"; strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"f.iso": "f.iso", "../../x": "x", "/etc/passwd": "passwd", "..": "download", "": "download", "a/..": "download",
		".bashrc": "bashrc", "...": "download", "a.b.": "a.b.",
	} {
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSignedQuery(t *testing.T) {
	for raw, want := range map[string]bool{
		"https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Expires=60": true,
		"https://storage.googleapis.com/b/o?X-Goog-Signature=ab":            true,
		"https://a.blob.core.windows.net/c/b?sv=2020&sig=xyz":               true,
		"https://d.cloudfront.net/f?Expires=1&Signature=s&Key-Pair-Id=k":    true,
		"https://h/f?version=2": false,
		"https://h/f":           false,
	} {
		if got := signedQuery(raw); got != want {
			t.Errorf("signedQuery(%q) = %v, want %v", raw, got, want)
		}
	}
}

func TestExitCode(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"usage", live, usagef("bad"), exitUsage},
		{"interrupted", done, fmt.Errorf("stopped: %w", context.Canceled), exitInterrupted},
		{"cancel without a signal", live, context.Canceled, exitFailure},
		{"checksum", live, fmt.Errorf("%w: x", errChecksum), exitChecksum},
		{"disk full", live, &os.PathError{Op: "write", Err: syscall.ENOSPC}, exitDiskFull},
		{"no space up front", live, fmt.Errorf("%w in .", errNoSpace), exitDiskFull},
		{"remote changed", live, fmt.Errorf("x: %w", fetch.ErrChanged), exitChanged},
		{"stale", live, fmt.Errorf("x: %w", cache.ErrStale), exitChanged},
		{"http status", live, &fetch.StatusError{Code: 403}, exitNetwork},
		{"gone", live, fetch.ErrGone, exitNetwork},
		{"range ignored", live, fetch.ErrRangeIgnored, exitNetwork},
		{"refused", live, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, exitNetwork},
		{"other", live, errors.New("boom"), exitFailure},
	} {
		if got := exitCode(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: exitCode = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestParseGetNewFlags(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	c, err := parseGet([]string{"-c", "--checksum", "sha-256=" + strings.ToUpper(sum), "-A", "x/1", "--retry", "0",
		"--connect-timeout", "2s", "--proxy", "http://127.0.0.1:3128", "-d", "out", "http://h/f"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SHA256 != sum || c.UserAgent != "x/1" || c.Retry != 0 || c.ConnectTimeout != 2*time.Second ||
		c.Sources.Proxy.Host != "127.0.0.1:3128" || c.OutputDir != "out" || len(c.Jobs) != 1 || c.Jobs[0].SHA256 != sum {
		t.Errorf("parsed %+v", c)
	}
	if c, _ := parseGet([]string{"http://h/f"}, noEnv, io.Discard); c.UserAgent != "rangefs/"+version || c.Retry != 5 {
		t.Errorf("defaults: %+v", c)
	}
	for _, args := range [][]string{
		{"--checksum", "sha-256=xyz", "http://h/f"},
		{"--checksum", "md5=" + sum, "http://h/f"},
		{"--checksum", "sha-256=" + sum, "--sha256", strings.Repeat("0", 64), "http://h/f"},
		{"--parallel", "0", "http://h/f"},
		{"-o", "x", "--output-dir", "d", "http://h/f"},
		{"http://h:99999/f"},
		{"http://h:0/f"},
		{"h.example/f"},
		{"--cacert", "/nonexistent/ca.pem", "http://h/f"},
	} {
		_, err := parseGet(args, noEnv, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseGet(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestNetrcLookup(t *testing.T) {
	text := "machine a.example login al password pa\n" +
		"machine b.example\n\tlogin bo\n\tpassword pb account x\n" +
		"default login dl password dp\n"
	for host, want := range map[string]string{"a.example": "al:pa", "b.example": "bo:pb", "c.example": "dl:dp"} {
		l, p, ok := netrcLookup(text, host)
		if !ok || l+":"+p != want {
			t.Errorf("%s: %q %q %v, want %s", host, l, p, ok, want)
		}
	}
	if _, _, ok := netrcLookup("machine a login x password y", "b"); ok {
		t.Error("an unlisted host matched without a default")
	}
}

// An explicit --log-level decides what is logged, whatever -q or -v say;
// without it, -v logs debug and -q only errors.
func TestLogLevelBeatsQuietAndVerbose(t *testing.T) {
	debug, info := slog.LevelDebug, slog.LevelInfo
	for _, c := range []struct {
		name string
		c    commonConfig
		want slog.Level
	}{
		{"default", commonConfig{}, slog.LevelWarn},
		{"-q", commonConfig{Quiet: true}, slog.LevelError},
		{"-v", commonConfig{Verbose: true}, slog.LevelDebug},
		{"-q --log-level debug", commonConfig{Quiet: true, LogLevel: &debug}, slog.LevelDebug},
		{"-v --log-level info", commonConfig{Verbose: true, LogLevel: &info}, slog.LevelInfo},
	} {
		l := newLogger(io.Discard, &c.c, slog.LevelWarn)
		ctx := context.Background()
		if !l.Enabled(ctx, c.want) || l.Enabled(ctx, c.want-1) {
			t.Errorf("%s: logger does not log from %v exactly", c.name, c.want)
		}
	}
}
