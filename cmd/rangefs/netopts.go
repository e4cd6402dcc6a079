package main

import (
	"bufio"
	"crypto/x509"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"rangefs/fetch"
)

// parseSHA256 checks a hex SHA-256 and returns it in lower case.
func parseSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 64 || strings.Trim(s, "0123456789abcdef") != "" {
		return "", usagef("must be 64 hex digits")
	}
	return s, nil
}

// parseChecksum reads aria2c's TYPE=DIGEST; only SHA-256 is supported.
func parseChecksum(s string) (string, error) {
	typ, digest, ok := strings.Cut(s, "=")
	if !ok {
		return "", usagef("--checksum must be TYPE=DIGEST, e.g. sha-256=<64 hex digits>")
	}
	switch strings.ToLower(typ) {
	case "sha-256", "sha256":
	default:
		return "", usagef("--checksum: %q is not supported; use sha-256", typ)
	}
	sum, err := parseSHA256(digest)
	if err != nil {
		return "", usagef("--checksum sha-256: %v", err)
	}
	return sum, nil
}

// readURLList reads an aria2c-style input file: one URL per line, blank
// lines and #comments skipped, and indented option lines (out=NAME,
// checksum=sha-256=HEX) applying to the URL above them. "-" is stdin.
func readURLList(path string, env Env) ([]getJob, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("-i: %v", err)
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var jobs []getJob
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(jobs) == 0 {
				return nil, usagef("-i %s line %d: an option line before any URL", path, n)
			}
			j := &jobs[len(jobs)-1]
			key, val, _ := strings.Cut(t, "=")
			switch key {
			case "out":
				if val == "" || strings.Contains(val, "\x00") {
					return nil, usagef("-i %s line %d: out= needs a file name", path, n)
				}
				j.Output = val
			case "checksum":
				sum, err := parseChecksum(val)
				if err != nil {
					return nil, usagef("-i %s line %d: %v", path, n, err)
				}
				j.SHA256 = sum
			default:
				return nil, usagef("-i %s line %d: unknown option %q (out= and checksum= are supported)", path, n, key)
			}
			continue
		}
		u, err := parseURL(t)
		if err != nil {
			return nil, usagef("-i %s line %d: %v", path, n, err)
		}
		jobs = append(jobs, getJob{URL: u})
	}
	if err := sc.Err(); err != nil {
		return nil, usagef("-i %s: %v", path, err)
	}
	if len(jobs) == 0 {
		return nil, usagef("-i %s lists no URL", path)
	}
	urls := make([]string, len(jobs))
	for i, j := range jobs {
		urls[i] = j.URL
	}
	if err := checkDistinct(urls, false); err != nil {
		return nil, err
	}
	// Two URLs saved under one out= name would share one partial download.
	// A name the URL or its server gives is known only once probed:
	// getOne's claim catches those. An out= naming a directory saves each
	// file in it under its own name.
	saves := map[string]int{}
	for i, j := range jobs {
		name := j.Output
		if name == "" || strings.HasSuffix(name, "/") {
			continue
		}
		if fi, err := os.Stat(name); err == nil && fi.IsDir() {
			continue
		}
		name = filepath.Clean(name)
		if k, ok := saves[name]; ok {
			return nil, usagef("-i %s: %s and %s both save to %s; give one of them its own out= line",
				path, fetch.Redact(jobs[k].URL), fetch.Redact(j.URL), name)
		}
		saves[name] = i
	}
	return jobs, nil
}

// outputClaims is the set of output files the downloads of one -i list
// write, so that two of them never share one (and its partial download).
type outputClaims struct {
	mu   sync.Mutex
	urls map[string]string // output path -> the URL writing it
}

// claim takes out for rawURL, or names the URL that holds it.
func (c *outputClaims) claim(out, rawURL string) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.urls == nil {
		c.urls = map[string]string{}
	}
	if other, ok := c.urls[out]; ok && other != rawURL {
		return usagef("%s is where %s saves too; give one of them its own out= line", out, fetch.Redact(other))
	}
	c.urls[out] = rawURL
	return nil
}

// loadCACert reads the PEM certificates of --cacert.
func loadCACert(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--cacert: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, usagef("--cacert %s holds no PEM certificate", path)
	}
	return pool, nil
}

// netrcPath is $NETRC, else ~/.netrc.
func netrcPath(env Env) string {
	if p := env("NETRC"); p != "" {
		return p
	}
	return filepath.Join(env("HOME"), ".netrc")
}

// withNetrc puts the login and password that the netrc file gives for the
// URL's host into the URL's user info (which fetch turns into Basic
// authentication, sent to that host only, and redacts everywhere). A URL
// that already has user info keeps it; a host the file does not list, or a
// missing file, leaves the URL as it is.
func withNetrc(raw, path string) string {
	if path == "" {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Host == "" {
		return raw
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return raw
	}
	login, password, ok := netrcLookup(string(data), u.Hostname())
	if !ok {
		return raw
	}
	u.User = url.UserPassword(login, password)
	return u.String()
}

// netrcLookup finds the entry for host (or the default entry) in netrc text.
func netrcLookup(text, host string) (login, password string, ok bool) {
	toks := strings.Fields(text)
	var cur string // the machine being read; "*" for default, "" for none
	var dLogin, dPass string
	var haveDefault bool
	for i := 0; i < len(toks); i++ {
		next := func() string {
			if i+1 < len(toks) {
				i++
				return toks[i]
			}
			return ""
		}
		switch toks[i] {
		case "machine":
			if cur == host && login != "" {
				return login, password, true
			}
			cur, login, password = next(), "", ""
		case "default":
			if cur == host && login != "" {
				return login, password, true
			}
			cur, login, password = "*", "", ""
		case "login":
			v := next()
			if cur == "*" {
				dLogin, haveDefault = v, true
			} else {
				login = v
			}
		case "password":
			v := next()
			if cur == "*" {
				dPass, haveDefault = v, true
			} else {
				password = v
			}
		case "account":
			next()
		case "macdef":
			// A macro runs to the next blank line, which Fields cannot see:
			// stop, as nothing after it can be told apart.
			i = len(toks)
		}
	}
	if cur == host && login != "" {
		return login, password, true
	}
	if haveDefault {
		return dLogin, dPass, true
	}
	return "", "", false
}
