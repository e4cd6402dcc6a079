package fetch

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"

	"rangefs/fetch/fetchtest"
)

func TestProbeHEAD(t *testing.T) {
	s, p := newTestServer(t)
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	if o.Size != p.Size() || !o.Ranges || o.ETag != s.ETag(fetchtest.DefaultPath) || o.LastModified == "" {
		t.Fatalf("Probe = size %d ranges %v etag %q lm %q; want %d true %q non-empty",
			o.Size, o.Ranges, o.ETag, o.LastModified, p.Size(), s.ETag(fetchtest.DefaultPath))
	}
	if o.Name != "file" {
		t.Errorf("Name = %q, want %q", o.Name, "file")
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodHead {
		t.Fatalf("server saw %d requests (%+v); want one HEAD", len(reqs), reqs)
	}
	if ae := reqs[0].Header.Get("Accept-Encoding"); ae != "identity" {
		t.Errorf("Accept-Encoding = %q, want identity", ae)
	}
}

// Each way HEAD can fail to tell size and range support leads to one ranged GET probe.
func TestProbeFallsBackToRangedGET(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    fetchtest.Behavior
	}{
		{"HEAD 403", fetchtest.Behavior{HeadStatus: http.StatusForbidden}},
		{"HEAD 405", fetchtest.Behavior{HeadStatus: http.StatusMethodNotAllowed}},
		{"HEAD 500", fetchtest.Behavior{HeadStatus: http.StatusInternalServerError}},
		{"no Content-Length", fetchtest.Behavior{NoContentLength: true}},
		{"no Accept-Ranges", fetchtest.Behavior{NoAcceptRanges: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := newTestServer(t, fetchtest.WithBehavior(tc.b))
			c := newTestClient(t, fastOptions())
			o := mustProbe(t, c, s.URL())
			if o.Size != p.Size() || !o.Ranges || o.ETag != s.ETag(fetchtest.DefaultPath) {
				t.Fatalf("Probe = size %d ranges %v etag %q; want %d true %q", o.Size, o.Ranges, o.ETag, p.Size(), s.ETag(fetchtest.DefaultPath))
			}
			if r := s.Ranges(); len(r) != 1 || r[0] != "bytes=0-0" {
				t.Fatalf("GET ranges seen = %q; want one bytes=0-0", r)
			}
		})
	}
}

func TestProbeRangeIgnored(t *testing.T) {
	s, p := newTestServer(t, fetchtest.WithBehavior(fetchtest.Behavior{HeadStatus: http.StatusMethodNotAllowed}))
	s.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	if o.Ranges || o.Size != p.Size() {
		t.Fatalf("Probe = ranges %v size %d; want false %d", o.Ranges, o.Size, p.Size())
	}
	// Ranges false is the caller's cue: a ranged Fetch fails clearly, Stream works.
	if err := o.Fetch(ctxT(t), 0, 10, &bytes.Buffer{}); !errors.Is(err, ErrRangeIgnored) {
		t.Fatalf("Fetch on a range-ignoring server: %v, want ErrRangeIgnored", err)
	}
	var buf bytes.Buffer
	if err := o.Stream(ctxT(t), &buf); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if int64(buf.Len()) != p.Size() {
		t.Fatalf("Stream wrote %d bytes, want %d", buf.Len(), p.Size())
	}
	checkBytes(t, buf.Bytes(), p, 0)
}

func TestProbeNoSize(t *testing.T) {
	s, _ := newTestServer(t, fetchtest.WithBehavior(fetchtest.Behavior{
		HeadStatus: http.StatusMethodNotAllowed, NoContentLength: true}))
	s.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
	c := newTestClient(t, fastOptions())
	if _, err := c.Probe(ctxT(t), s.URL()); !errors.Is(err, ErrNoSize) {
		t.Fatalf("Probe: %v, want ErrNoSize", err)
	}
}

func TestProbeGone(t *testing.T) {
	s, _ := newTestServer(t)
	c := newTestClient(t, fastOptions())
	_, err := c.Probe(ctxT(t), s.URLFor("/missing"))
	var se *StatusError
	if !errors.Is(err, ErrGone) || !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("Probe of a missing path: %v; want ErrGone with StatusError 404", err)
	}
	if n := s.Stats().Requests; n != 1 {
		t.Errorf("server saw %d requests, want 1 (404 is final)", n)
	}
	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: http.StatusGone})
	if _, err := c.Probe(ctxT(t), s.URL()); !errors.Is(err, ErrGone) {
		t.Fatalf("Probe of a 410 path: %v; want ErrGone", err)
	}
}

func TestProbeForbiddenIsFinal(t *testing.T) {
	s, _ := newTestServer(t)
	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: http.StatusForbidden})
	c := newTestClient(t, fastOptions())
	_, err := c.Probe(ctxT(t), s.URL())
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("Probe: %v; want StatusError 403", err)
	}
	// HEAD 403 falls back to one GET probe, whose 403 is final.
	if h, g := countMethod(s, http.MethodHead), countMethod(s, http.MethodGet); h != 1 || g != 1 {
		t.Fatalf("server saw %d HEAD and %d GET, want 1 and 1", h, g)
	}
}

func TestProbeRetries5xx(t *testing.T) {
	s, p := newTestServer(t)
	s.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: http.StatusServiceUnavailable, Times: 3})
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	if o.Size != p.Size() {
		t.Fatalf("Size = %d, want %d", o.Size, p.Size())
	}
	// HEAD 503 (falls back), GET 503, GET 503, GET 206.
	if n := s.Stats().Requests; n != 4 {
		t.Fatalf("server saw %d requests, want 4", n)
	}
}

func TestProbeValidators(t *testing.T) {
	for _, tc := range []struct {
		name        string
		b           fetchtest.Behavior
		wantETag    bool
		wantLM      bool
		wantIfRange string // "etag", "lm" or ""
	}{
		{"strong ETag", fetchtest.Behavior{}, true, true, "etag"},
		{"weak ETag", fetchtest.Behavior{ETag: fetchtest.ETagWeak}, false, true, "lm"},
		{"Last-Modified only", fetchtest.Behavior{ETag: fetchtest.ETagNone}, false, true, "lm"},
		{"no validators", fetchtest.Behavior{ETag: fetchtest.ETagNone, NoLastModified: true}, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := newTestServer(t, fetchtest.WithBehavior(tc.b))
			c := newTestClient(t, fastOptions())
			o := mustProbe(t, c, s.URL())
			if (o.ETag != "") != tc.wantETag || (o.LastModified != "") != tc.wantLM {
				t.Fatalf("ETag %q LastModified %q; want etag %v lm %v", o.ETag, o.LastModified, tc.wantETag, tc.wantLM)
			}
			if strings.HasPrefix(o.ETag, "W/") {
				t.Fatalf("weak ETag %q exposed as ETag", o.ETag)
			}
			var buf bytes.Buffer
			if err := o.Fetch(ctxT(t), 1000, 5000, &buf); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			checkBytes(t, buf.Bytes(), p, 1000)
			var got string
			for _, r := range s.Requests() {
				if r.Range == "bytes=1000-5999" {
					got = r.IfRange
				}
			}
			want := map[string]string{"etag": o.ETag, "lm": o.LastModified, "": ""}[tc.wantIfRange]
			if got != want {
				t.Fatalf("If-Range sent = %q, want %q", got, want)
			}
			if strings.HasPrefix(got, "W/") {
				t.Fatalf("weak ETag sent in If-Range: %q", got)
			}
		})
	}
}

func TestProbeEmptyFile(t *testing.T) {
	for _, b := range []fetchtest.Behavior{{}, {HeadStatus: http.StatusForbidden}} {
		s := fetchtest.NewServer(bytes.NewReader(nil), 0, fetchtest.WithBehavior(b))
		t.Cleanup(s.Close)
		c := newTestClient(t, fastOptions())
		o := mustProbe(t, c, s.URL())
		if o.Size != 0 || !o.Ranges {
			t.Fatalf("HEAD status %d: Probe = size %d ranges %v; want 0 true", b.HeadStatus, o.Size, o.Ranges)
		}
		if err := o.Fetch(ctxT(t), 0, 0, &bytes.Buffer{}); err != nil {
			t.Fatalf("Fetch of nothing: %v", err)
		}
	}
}

func TestProbeEncodingRefused(t *testing.T) {
	s, _ := newTestServer(t, fetchtest.WithBehavior(fetchtest.Behavior{Gzip: true, HeadStatus: http.StatusForbidden}))
	c := newTestClient(t, fastOptions())
	if _, err := c.Probe(ctxT(t), s.URL()); !errors.Is(err, ErrEncoding) {
		t.Fatalf("Probe of a gzipping server: %v, want ErrEncoding", err)
	}
}

func TestProbeName(t *testing.T) {
	s, _ := newTestServer(t, fetchtest.WithBehavior(fetchtest.Behavior{
		ContentDisposition: `attachment; filename="../../etc/passwd"`}))
	c := newTestClient(t, fastOptions())
	if o := mustProbe(t, c, s.URL()); o.Name != "passwd" {
		t.Fatalf("Name = %q, want passwd", o.Name)
	}
	s.SetBehavior(fetchtest.Behavior{ContentDisposition: `attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`})
	if o := mustProbe(t, c, s.URL()); o.Name != "résumé.pdf" {
		t.Fatalf("Name = %q, want résumé.pdf", o.Name)
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"":                       fallbackName,
		".":                      fallbackName,
		"..":                     fallbackName,
		"/":                      fallbackName,
		"a/b/c.iso":              "c.iso",
		`..\..\x.exe`:            "x.exe",
		"x\x00y\nz\x7f":          "xyz",
		"  spaced  ":             "spaced",
		"bad\xffutf8":            "badutf8",
		"..hidden":               "..hidden",
		strings.Repeat("é", 200): strings.Repeat("é", 127),
	} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProbeRejectsSchemes(t *testing.T) {
	c := newTestClient(t, fastOptions())
	for _, u := range []string{"file:///etc/passwd", "ftp://example.com/x", "http:///nohost", "::bad"} {
		if _, err := c.Probe(ctxT(t), u); err == nil {
			t.Errorf("Probe(%q) succeeded; want an error", u)
		}
	}
}
