package listing

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rangefs/fetch/fetchtest/testsync"
)

// logBuffer is a slog destination tests can read; safe for concurrent use.
type logBuffer struct{ testsync.Buffer }

// count returns how many records contain every one of the substrings.
func (b *logBuffer) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

func newLog() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn})), b
}

// requestLog counts the requests a test server answers, by path.
type requestLog struct {
	mu    sync.Mutex
	paths []string
	n     atomic.Int64
}

func (r *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.n.Add(1)
		r.mu.Lock()
		r.paths = append(r.paths, req.Method+" "+req.URL.RequestURI())
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	})
}

func (r *requestLog) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...)
}

// serve starts a loopback server for h, closed when the test ends.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// byName indexes entries, failing on a repeated name.
func byName(t testing.TB, es []Entry) map[string]Entry {
	t.Helper()
	m := map[string]Entry{}
	for i, e := range es {
		if _, dup := m[e.Name]; dup {
			t.Fatalf("name %q twice", e.Name)
		}
		if i > 0 && es[i-1].Name >= e.Name {
			t.Fatalf("entries not sorted: %q before %q", es[i-1].Name, e.Name)
		}
		m[e.Name] = e
	}
	return m
}

func names(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Name
		if e.IsDir {
			out[i] += "/"
		}
	}
	return out
}
