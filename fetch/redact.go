package fetch

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// redactedValue replaces every query value in a redacted URL.
const redactedValue = "REDACTED"

// Redact returns rawURL without userinfo and fragment, with every query value replaced by
// "REDACTED" (keys kept, order kept). Safe to log and to store. An unparseable URL gives a
// fixed placeholder rather than echoing text that may hold a secret.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable URL)"
	}
	return redactURL(u)
}

func redactURL(u *url.URL) string {
	if u.Opaque != "" {
		return u.Scheme + ":" + redactedValue
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	if u.RawQuery != "" || u.ForceQuery {
		r.RawQuery = redactQuery(u.RawQuery)
		r.ForceQuery = u.ForceQuery
	}
	return r.String()
}

// redactQuery keeps each key (as sent) and replaces each value. A part
// without "=" is a bare token (some signed URLs are "?<token>"), so it is
// replaced whole.
func redactQuery(q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok {
			parts[i] = k + "=" + redactedValue
		} else if p != "" {
			parts[i] = redactedValue
		}
	}
	return strings.Join(parts, "&")
}

// identityOf is scheme://host/path[?query] with userinfo and fragment removed, the scheme and
// host lower-cased and a default port dropped, so that equivalent spellings share one cache.
func identityOf(u *url.URL, withQuery bool) string {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Host)
	if (scheme == "http" && strings.HasSuffix(host, ":80")) || (scheme == "https" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	r := url.URL{Scheme: scheme, Host: host, Path: u.Path, RawPath: u.RawPath}
	if r.Path == "" {
		r.Path = "/"
	}
	if withQuery {
		r.RawQuery = u.RawQuery
	}
	return r.String()
}

// secretSet is the list of strings that must never appear in an error or log record for one
// Object: userinfo parts, query values (raw and decoded) and user header values.
type secretSet []string

// minSecretLen avoids "redacting" one-letter values that would mangle every message.
const minSecretLen = 3

func collectSecrets(u *url.URL, h map[string][]string) secretSet {
	var s []string
	add := func(v string) {
		if len(v) >= minSecretLen {
			s = append(s, v)
		}
	}
	if u.User != nil {
		add(u.User.Username())
		if p, ok := u.User.Password(); ok {
			add(p)
		}
		add(u.User.String())
	}
	for _, p := range strings.Split(u.RawQuery, "&") {
		v := p
		if _, after, ok := strings.Cut(p, "="); ok {
			v = after
		}
		add(v)
		if dv, err := url.QueryUnescape(v); err == nil {
			add(dv)
		}
	}
	for _, vv := range h {
		for _, v := range vv {
			add(v)
			// "Bearer abc": the token alone may also be echoed.
			if _, tok, ok := strings.Cut(v, " "); ok {
				add(strings.TrimSpace(tok))
			}
		}
	}
	// Longest first so a secret containing another is replaced whole.
	sort.Slice(s, func(i, j int) bool { return len(s[i]) > len(s[j]) })
	return s
}

// errBadLocation replaces Go's error for an unparseable Location header.
var errBadLocation = fmt.Errorf("%w: unparseable Location header", ErrRedirect)

// urlInText matches absolute URLs embedded in error text (Go's errors echo them, e.g.
// `failed to parse Location header "https://..."`).
var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>]+`)

// scrub removes every URL secret and every known secret string from msg.
func (s secretSet) scrub(msg string) string {
	msg = urlInText.ReplaceAllStringFunc(msg, func(m string) string {
		trail := ""
		// Keep punctuation that ends a sentence outside the URL.
		for len(m) > 0 && strings.ContainsRune(".,;:)]}", rune(m[len(m)-1])) {
			trail = m[len(m)-1:] + trail
			m = m[:len(m)-1]
		}
		return Redact(m) + trail
	})
	for _, v := range s {
		msg = strings.ReplaceAll(msg, v, redactedValue)
	}
	return msg
}

// sanitize returns err with any *url.Error URL redacted and its text scrubbed. Errors of
// this package's own types pass through unchanged (their text is built from redacted parts).
func (s secretSet) sanitize(err error) error {
	if err == nil {
		return nil
	}
	var re *redactedError
	if errors.As(err, &re) {
		return err
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if strings.Contains(ue.Err.Error(), "failed to parse Location header") {
			// Go quotes the raw Location, whose secrets we cannot know: keep none of it.
			err = &url.Error{Op: ue.Op, URL: redactedValue, Err: errBadLocation}
		} else {
			err = &url.Error{Op: ue.Op, URL: Redact(ue.URL), Err: ue.Err}
		}
	}
	return &redactedError{msg: s.scrub(err.Error()), err: err}
}

// sanitizeForeign sanitizes err unless it is one of this package's own errors, whose text is
// already built from redacted parts.
func (s secretSet) sanitizeForeign(err error) error {
	var we *WriteError
	switch {
	case err == nil, errors.Is(err, errStall), errors.Is(err, errShortBody), errors.As(err, &we):
		return err
	}
	return s.sanitize(err)
}
