package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"rangefs/fetch/fetchtest"
)

// freeAddr is a loopback address that nothing listened on a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the metrics do not parse: %v", err)
	}
	return fams
}

// value is the sum of a family's samples whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	var sum float64
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// The /metrics endpoint parses with the Prometheus text parser, and its
// counters agree with what the test server counted.
func TestMountMetrics(t *testing.T) {
	needFUSE(t)
	const size = 3<<20 + 77
	srv, p := patternServer(t, size, 99)
	// One ranged request answered 503: it is retried, and both show.
	srv.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 503, Times: 1, RangedOnly: true})
	mnt, addr := t.TempDir(), freeAddr(t)
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "--no-prefetch", "--no-passthrough", "--metrics-addr", addr, srv.URL(), mnt)
	path := filepath.Join(mnt, "file")
	readsExact(t, path, p, "first read")
	// Chunks count as cached once committed, a moment after their bytes
	// were served: wait for that.
	for i := 0; value(t, scrape(t, addr), "rangefs_cache_bytes") != size; i++ {
		if i == 200 {
			t.Fatal("the chunks were not committed within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Again, past the kernel's page cache (and, with --no-passthrough,
	// through the daemon): now every byte is a cache hit.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var again int64
	for {
		n, err := f.Read(buf)
		again += int64(n)
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if again != size {
		t.Fatalf("O_DIRECT pass read %d bytes", again)
	}

	for i := 0; srv.Stats().InFlight > 0 && i < 200; i++ {
		time.Sleep(5 * time.Millisecond) // the server counts a request when its handler returns
	}
	fams := scrape(t, addr)
	st := srv.Stats()
	if got := value(t, fams, "rangefs_network_bytes_total"); got != float64(st.BytesSent) {
		t.Errorf("rangefs_network_bytes_total = %v, the server sent %d body bytes", got, st.BytesSent)
	}
	if got := value(t, fams, "rangefs_http_requests_total"); got != float64(st.Requests) {
		t.Errorf("rangefs_http_requests_total = %v, the server answered %d requests", got, st.Requests)
	}
	if got := value(t, fams, "rangefs_http_requests_total", "class", "2xx"); got != float64(st.Requests-1) {
		t.Errorf("2xx requests = %v, want %d", got, st.Requests-1)
	}
	if got := value(t, fams, "rangefs_http_requests_total", "class", "5xx"); got != 1 {
		t.Errorf("5xx requests = %v, want 1", got)
	}
	if got := value(t, fams, "rangefs_http_retries_total"); got != 1 {
		t.Errorf("rangefs_http_retries_total = %v, want 1", got)
	}
	if got := value(t, fams, "rangefs_cache_read_bytes_total"); got < size {
		t.Errorf("rangefs_cache_read_bytes_total = %v after an uncached pass over %d cached bytes", got, size)
	}
	if got := value(t, fams, "rangefs_read_bytes_total"); got < 2*size {
		t.Errorf("rangefs_read_bytes_total = %v after two passes over %d bytes", got, size)
	}
	if got := value(t, fams, "rangefs_cache_bytes"); got != size {
		t.Errorf("rangefs_cache_bytes = %v, want %d", got, size)
	}
	if got := value(t, fams, "rangefs_cache_chunks"); got != 4 {
		t.Errorf("rangefs_cache_chunks = %v, want 4", got)
	}
	if got := value(t, fams, "rangefs_file_cached_ratio", "url", srv.URL()); got != 1 {
		t.Errorf("rangefs_file_cached_ratio = %v, want 1", got)
	}
	if got := value(t, fams, "rangefs_read_duration_seconds", "cache", "hit"); got < 1 {
		t.Errorf("no cache hit in the read latency histogram")
	}
	// The 503 halved the adaptive limit from -j's 8; successes raise it again.
	if got := value(t, fams, "rangefs_http_concurrency_limit"); got < 1 || got >= 8 {
		t.Errorf("rangefs_http_concurrency_limit = %v, want it lowered from 8 by the 503", got)
	}
	if _, ok := fams["rangefs_http_connections_active"]; !ok {
		t.Error("no rangefs_http_connections_active")
	}

	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr.String())
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("the metrics endpoint outlived the mount")
	}
	if r := rangefs(t, t.TempDir(), "mount", "--metrics-addr", "nonsense", srv.URL(), t.TempDir()); r.code != exitUsage {
		t.Errorf("--metrics-addr nonsense: exit %d", r.code)
	}
}

// The retry counter of every operation is exported from the start, at 0,
// so that a rate() alert on it has a series before the first retry.
func TestRetryCountersStartAtZero(t *testing.T) {
	fams, err := newMetrics().reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for _, f := range fams {
		if f.GetName() != "rangefs_http_retries_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && m.GetCounter().GetValue() == 0 {
					ops[l.GetValue()] = true
				}
			}
		}
	}
	for _, op := range []string{"probe", "fetch", "stream"} {
		if !ops[op] {
			t.Errorf("rangefs_http_retries_total{op=%q} is not exported at 0 (have %v)", op, ops)
		}
	}
}
