package fetch

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"rangefs/fetch/fetchtest"
	"rangefs/fetch/fetchtest/testsync"
)

// Every secret — URL userinfo, signed query values (raw and decoded), user header values,
// secrets in redirect targets — stays out of every error string and log record, across
// success, retries, status errors, bad ranges, redirects and connection failures.
func TestNoSecretsInErrorsOrLogs(t *testing.T) {
	secrets := []string{
		"pa55word", "s3cr3tsig", "AKIAEXAMPLE/2025/x", "AKIAEXAMPLE%2F2025%2Fx", "t0ken-abcdef",
		"k3y-value", "r3dir3ct", "ftpsecret", "l0cs3cret",
	}
	s, _ := newTestServer(t)
	s.Redirect("/redir", "/redir2?token=r3dir3ct", http.StatusFound)
	s.Redirect("/redir2", "/redir?token=r3dir3ct", http.StatusFound)
	s.Redirect("/ftp", "ftp://u:ftpsecret@127.0.0.1/x?token=r3dir3ct", http.StatusFound)
	s.Redirect("/badloc", "http://bad host/?sig=l0cs3cret", http.StatusFound)

	var logs testsync.Buffer
	opt := fastOptions()
	opt.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opt.Header = http.Header{"Authorization": {"Bearer t0ken-abcdef"}, "X-Api-Key": {"k3y-value"}}
	c := newTestClient(t, opt)

	withSecrets := func(base string) string {
		return strings.Replace(base, "http://", "http://user:pa55word@", 1) +
			"?X-Amz-Signature=s3cr3tsig&X-Amz-Credential=AKIAEXAMPLE%2F2025%2Fx"
	}
	var errs []error
	o := mustProbe(t, c, withSecrets(s.URL()))
	texts := []string{o.URL(), Redact(withSecrets(s.URL())), o.Name}

	for _, f := range []fetchtest.Fault{
		{Kind: fetchtest.Status, Code: 503, RetryAfter: "0"},
		{Kind: fetchtest.Status, Code: 403},
		{Kind: fetchtest.BadContentRange, ContentRange: "bytes 1-0/5"},
		{Kind: fetchtest.ShortBody, Arg: 10, Times: 1},
		{Kind: fetchtest.IgnoreRange},
		{Kind: fetchtest.WrongRange},
		{Kind: fetchtest.Status, Code: 416},
	} {
		s.ClearFaults()
		s.Inject(f)
		errs = append(errs, o.Fetch(ctxT(t), 0, 1000, &bytes.Buffer{}))
	}
	s.ClearFaults()
	for _, p := range []string{"/redir", "/ftp", "/badloc", "/missing"} {
		_, err := c.Probe(ctxT(t), withSecrets(s.URLFor(p)))
		errs = append(errs, err)
	}
	// A port nobody listens on: connection refused, retried, given up.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/file"
	l.Close()
	_, err = c.Probe(ctxT(t), withSecrets(dead))
	errs = append(errs, err)

	for i, err := range errs {
		if err == nil && i != 3 { // the short body heals
			t.Errorf("scenario %d: no error", i)
			continue
		}
		if err != nil {
			texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%v", errors.Unwrap(err)))
		}
	}
	texts = append(texts, logs.String())
	for _, text := range texts {
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("secret %q leaked in: %s", sec, text)
			}
		}
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Fatalf("the log shows no retries; the test did not exercise logging:\n%s", logs.String())
	}
	t.Logf("sample error: %v", errs[0])
	t.Logf("sample error: %v", errs[len(errs)-1])
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@host.example/a/b.iso?sig=xyz&X-Amz-Date=1#frag": "https://host.example/a/b.iso?sig=REDACTED&X-Amz-Date=REDACTED",
		"http://host/p?flag":                 "http://host/p?REDACTED",
		"http://host/p?Zm9vYmFyc2VjcmV0&a=b": "http://host/p?REDACTED&a=REDACTED",
		"http://host/p?a=1&&b=2":             "http://host/p?a=REDACTED&&b=REDACTED",
		"http://host/a%2Fb":                  "http://host/a%2Fb",
		"::not a url":                        "(unparseable URL)",
		"mailto:someone@x":                   "mailto:REDACTED",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIdentity(t *testing.T) {
	s, _ := newTestServer(t)
	c := newTestClient(t, fastOptions())
	u := strings.Replace(s.URL(), "http://127.0.0.1", "HTTP://alice:pw@127.0.0.1", 1) + "?v=1#frag"
	o := mustProbe(t, c, u)
	want := s.URL() + "?v=1"
	if o.Identity() != want || o.IdentityNoQuery() != s.URL() {
		t.Fatalf("Identity = %q / %q; want %q / %q", o.Identity(), o.IdentityNoQuery(), want, s.URL())
	}
	for in, want := range map[string]string{
		"http://Host.Example:80/a":   "http://host.example/a",
		"https://host.example:443":   "https://host.example/",
		"https://host.example:8443/": "https://host.example:8443/",
	} {
		tg, err := parseTarget(in, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := identityOf(tg.u, true); got != want {
			t.Errorf("identity(%q) = %q, want %q", in, got, want)
		}
	}
}
