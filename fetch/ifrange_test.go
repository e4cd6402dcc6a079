package fetch

import (
	"bytes"
	"errors"
	"testing"

	"rangefs/fetch/fetchtest"
)

// nginx's slice module cannot honour a failed If-Range (it would have to send the whole new
// file) and closes the connection without an answer. The retry without If-Range gets a 206
// of the new version, whose validators give the change away: ErrChanged, not a give-up on EOF.
func TestFetchDroppedFailedIfRangeIsChange(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    fetchtest.Behavior
	}{
		{"strong ETag", fetchtest.Behavior{DropFailedIfRange: true}},
		{"Last-Modified only", fetchtest.Behavior{DropFailedIfRange: true, ETag: fetchtest.ETagNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, fetchtest.WithBehavior(tc.b))
			c := newTestClient(t, fastOptions())
			o := mustProbe(t, c, s.URL())
			s.SetContent(fetchtest.DefaultPath, fetchtest.Pattern(testSize, 8), testSize)
			s.ResetStats()
			var buf bytes.Buffer
			err := o.Fetch(ctxT(t), 0, 1<<20, &buf)
			if !errors.Is(err, ErrChanged) || !isRemoteChanged(err) {
				t.Fatalf("Fetch after a change behind a server that drops a failed If-Range: %v; want ErrChanged", err)
			}
			if buf.Len() != 0 {
				t.Fatalf("writer got %d bytes of the new version", buf.Len())
			}
			// net/http itself resends a request once when a reused connection closes before
			// the answer, so the one with If-Range may come twice.
			var ifr []bool
			for _, r := range s.Requests() {
				ifr = append(ifr, r.IfRange != "")
			}
			if len(ifr) < 2 || len(ifr) > 3 || !ifr[0] || ifr[len(ifr)-2] != true || ifr[len(ifr)-1] {
				t.Fatalf("If-Range sent per request: %v; want it on the first (maybe twice), then one request without", ifr)
			}
		})
	}
}

// While the version is unchanged the same server answers normally, and a body cut short
// (an answer did come) is retried with If-Range as before.
func TestFetchIfRangeKeptWhileUnchanged(t *testing.T) {
	s, p := newTestServer(t, fetchtest.WithBehavior(fetchtest.Behavior{DropFailedIfRange: true}))
	c := newTestClient(t, fastOptions())
	o := mustProbe(t, c, s.URL())
	s.ResetStats()
	s.Inject(fetchtest.Fault{Kind: fetchtest.ShortBody, Arg: 0, Times: 1})
	var buf bytes.Buffer
	if err := o.Fetch(ctxT(t), 4096, 1<<20, &buf); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	checkBytes(t, buf.Bytes(), p, 4096)
	reqs := s.Requests()
	if len(reqs) != 2 {
		t.Fatalf("server saw %d requests, want 2", len(reqs))
	}
	for i, r := range reqs {
		if r.IfRange == "" {
			t.Fatalf("request %d had no If-Range", i)
		}
	}
}
