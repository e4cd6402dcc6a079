package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"rangefs/cache"
	"rangefs/fetch"
)

// metrics is what --metrics-addr serves. Counters that the engine pushes
// (responses, retries, body bytes, read latencies) are Prometheus metrics
// updated as they happen; what the caches and the clients know (bytes and
// chunks on disk, bytes served, limits) is read at scrape time.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	netBytes  prometheus.Counter
	readTimes *prometheus.HistogramVec

	mu      sync.Mutex
	clients []*fetch.Client
	pools   []*cache.Pool
}

// activeMetrics is set while a mount serves metrics; newClient reports to it.
var activeMetrics struct {
	sync.Mutex
	m *metrics
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rangefs_http_requests_total",
			Help: "HTTP requests sent, by the class of their answer (2xx, 3xx, 4xx, 5xx, or error for none).",
		}, []string{"class"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rangefs_http_retries_total",
			Help: "Retries after a failed attempt, by operation.",
		}, []string{"op"}),
		netBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rangefs_network_bytes_total",
			Help: "Response body bytes received from the network.",
		}),
		readTimes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rangefs_read_duration_seconds",
			Help:    "Time of each read served by the mount, by whether its chunks were already cached.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 30},
		}, []string{"cache"}),
	}
	// Every operation's retry count is there from the start, at 0: an alert
	// on its rate needs the series before the first retry.
	for _, op := range []string{"probe", "fetch", "stream"} {
		m.retries.WithLabelValues(op)
	}
	m.reg.MustRegister(m.requests, m.retries, m.netBytes, m.readTimes, m,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// serveMetrics starts the endpoint at addr and makes this process report to
// it; stop ends both.
func serveMetrics(addr string) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	m := newMetrics()
	activeMetrics.Lock()
	activeMetrics.m = m
	activeMetrics.Unlock()
	cache.SetReadObserver(func(d time.Duration, n int, hit bool) {
		label := "miss"
		if hit {
			label = "hit"
		}
		m.readTimes.WithLabelValues(label).Observe(d.Seconds())
	})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the mount goes on without its metrics
		}
	}()
	return func() {
		srv.Close()
		cache.SetReadObserver(nil)
		activeMetrics.Lock()
		activeMetrics.m = nil
		activeMetrics.Unlock()
	}, nil
}

// currentMetrics is the metrics a new Client should report to, or nil.
func currentMetrics() *metrics {
	activeMetrics.Lock()
	defer activeMetrics.Unlock()
	return activeMetrics.m
}

// addPool lets the scrape read the Pool's adaptive limit, the one bound on
// requests in flight (fetch reports load to it).
func (m *metrics) addPool(p *cache.Pool) {
	m.mu.Lock()
	m.pools = append(m.pools, p)
	m.mu.Unlock()
}

// addClient lets the scrape read the Client's adaptive limits.
func (m *metrics) addClient(c *fetch.Client) {
	m.mu.Lock()
	m.clients = append(m.clients, c)
	m.mu.Unlock()
}

// The fetch.Observer side.

func (m *metrics) Response(code int) {
	m.requests.WithLabelValues(strconv.Itoa(code/100) + "xx").Inc()
}
func (m *metrics) TransportError()   { m.requests.WithLabelValues("error").Inc() }
func (m *metrics) Retry(op string)   { m.retries.WithLabelValues(op).Inc() }
func (m *metrics) BodyBytes(n int64) { m.netBytes.Add(float64(n)) }

// The prometheus.Collector side: what is read at scrape time.

var (
	descCacheReadBytes = prometheus.NewDesc("rangefs_cache_read_bytes_total",
		"Bytes served to readers from chunks already cached.", nil, nil)
	descReadBytes = prometheus.NewDesc("rangefs_read_bytes_total",
		"Bytes served to readers, from the cache or the network.", nil, nil)
	descCacheBytes = prometheus.NewDesc("rangefs_cache_bytes",
		"Bytes of the mounted files held in the cache.", nil, nil)
	descCacheChunks = prometheus.NewDesc("rangefs_cache_chunks",
		"Chunks of the mounted files held in the cache.", nil, nil)
	descFetchesActive = prometheus.NewDesc("rangefs_fetches_active",
		"Range requests in progress for the mounted files.", nil, nil)
	descInFlight = prometheus.NewDesc("rangefs_http_connections_active",
		"HTTP requests in flight, by host (each holds a connection).", []string{"host"}, nil)
	descLimit = prometheus.NewDesc("rangefs_http_concurrency_limit",
		"Current adaptive limit of requests in flight (lowered while a server sheds load).", nil, nil)
	descCached = prometheus.NewDesc("rangefs_file_cached_ratio",
		"Fraction of each mounted file held in the cache, 0 to 1.", []string{"url"}, nil)
	descFileSize = prometheus.NewDesc("rangefs_file_size_bytes",
		"Size of each mounted file.", []string{"url"}, nil)
	descBudgetUsed = prometheus.NewDesc("rangefs_cache_budget_used_bytes",
		"Bytes the cache budget counts under the cache directory, for every process sharing it.", []string{"cache_dir"}, nil)
	descBudgetLimit = prometheus.NewDesc("rangefs_cache_budget_limit_bytes",
		"The cache budget's size limit (--cache-max-size); 0: none.", []string{"cache_dir"}, nil)
	descBudgetPinned = prometheus.NewDesc("rangefs_cache_budget_pinned_bytes",
		"Bytes of this process's cached chunks that cannot be evicted now.", []string{"cache_dir"}, nil)
	descEvictions = prometheus.NewDesc("rangefs_cache_evictions_total",
		"Chunks and whole objects this process evicted to keep within the cache budget.", []string{"cache_dir"}, nil)
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheReadBytes, descReadBytes, descCacheBytes, descCacheChunks,
		descFetchesActive, descInFlight, descLimit, descCached, descFileSize,
		descBudgetUsed, descBudgetLimit, descBudgetPinned, descEvictions} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	var cachedRead, read, bytes, chunks, active float64
	for _, f := range cache.Files() {
		st, rc := f.Stats(), f.ReadCounters()
		cachedRead += float64(rc.BytesFromCache)
		read += float64(rc.Bytes)
		bytes += float64(st.BytesPresent)
		chunks += float64(st.Present)
		active += float64(st.Active)
		ratio := 1.0
		if st.Size > 0 {
			ratio = float64(st.BytesPresent) / float64(st.Size)
		}
		url := f.Meta().URL
		ch <- prometheus.MustNewConstMetric(descCached, prometheus.GaugeValue, ratio, url)
		ch <- prometheus.MustNewConstMetric(descFileSize, prometheus.GaugeValue, float64(st.Size), url)
	}
	ch <- prometheus.MustNewConstMetric(descCacheReadBytes, prometheus.CounterValue, cachedRead)
	ch <- prometheus.MustNewConstMetric(descReadBytes, prometheus.CounterValue, read)
	ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, bytes)
	ch <- prometheus.MustNewConstMetric(descCacheChunks, prometheus.GaugeValue, chunks)
	ch <- prometheus.MustNewConstMetric(descFetchesActive, prometheus.GaugeValue, active)
	m.collectBudgets(ch)
	m.mu.Lock()
	clients := append([]*fetch.Client(nil), m.clients...)
	pools := append([]*cache.Pool(nil), m.pools...)
	m.mu.Unlock()
	inFlight := map[string]int{}
	for _, c := range clients {
		for _, l := range c.Limits() {
			inFlight[l.Host] += l.InFlight
		}
	}
	for host, n := range inFlight {
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(n), host)
	}
	if len(pools) > 0 {
		limit := 0
		for _, p := range pools {
			limit += p.Limit()
		}
		ch <- prometheus.MustNewConstMetric(descLimit, prometheus.GaugeValue, float64(limit))
	}
}

// collectBudgets reports the cache budgets this process holds (one per
// cache directory; none before a file is opened under one) and the
// evictions it made under each cache directory since it started.
func (m *metrics) collectBudgets(ch chan<- prometheus.Metric) {
	evictions := cache.Evictions()
	for _, b := range cache.ProcessBudgets() {
		u, err := b.Usage()
		if err != nil {
			continue
		}
		root := b.Root()
		ch <- prometheus.MustNewConstMetric(descBudgetUsed, prometheus.GaugeValue, float64(u.Used), root)
		ch <- prometheus.MustNewConstMetric(descBudgetLimit, prometheus.GaugeValue, float64(u.Limit), root)
		ch <- prometheus.MustNewConstMetric(descBudgetPinned, prometheus.GaugeValue, float64(u.Pinned), root)
		if _, ok := evictions[root]; !ok {
			evictions[root] = 0
		}
	}
	for root, n := range evictions {
		ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(n), root)
	}
}
