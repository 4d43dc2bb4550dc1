package main

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
)

// The figures recorded per request, with tailcut's names.
type figure int

const (
	figHeaders  figure = iota // request received to response headers
	figTotal                  // request received to the end of the response body
	figUpstream               // request sent upstream to the end of the upstream response
	figProxy                  // total minus upstream
	figures
)

var figureNames = [figures]string{"headers", "total", "upstream", "proxy"}

// How a response ended, with tailcut's label values.
type end int

const (
	endComplete end = iota
	endError
	endClientGone
	ends
)

var endNames = [ends]string{"complete", "error", "client_gone"}

// highestMicros is the top of every histogram: 60 s. Longer values are clamped.
const highestMicros = 60_000_000

// Metrics holds what goproxy measures: the same metric names, labels and
// latency figures as tailcut, so both proxies do equal work per request.
// Counters are created up front for every label combination the config
// allows, so the request path never looks a label set up in a map.
type Metrics struct {
	registry *prometheus.Registry
	// Per route slot (routes in config order, then "no route"): names,
	// request counters per status class, and body ends.
	routes   [][2]string
	requests [][5]prometheus.Counter
	ended    [][ends]prometheus.Counter
	// Per cluster name.
	connectErrors map[string]prometheus.Counter
	timeouts      map[string]prometheus.Counter
	// Per listener, in config order.
	connActive []prometheus.Gauge
	connTotal  []prometheus.Counter
	// nil for a listener without TLS.
	tlsFailures []prometheus.Counter

	latency   *latencyRecorder
	accessLog *accessLog
	ready     atomic.Bool
}

// NewMetrics creates every metric the config allows.
func NewMetrics(cfg *Config) *Metrics {
	m := &Metrics{registry: prometheus.NewRegistry()}
	for _, r := range cfg.Routes {
		m.routes = append(m.routes, [2]string{r.Name, r.Upstream})
	}
	m.routes = append(m.routes, [2]string{"", ""})

	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailcut_requests_total", Help: "Requests answered, by route, cluster and status class.",
	}, []string{"route", "cluster", "status_class"})
	ended := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailcut_responses_ended_total", Help: "Response bodies by how they ended: complete, error, or client_gone.",
	}, []string{"route", "cluster", "end"})
	for _, names := range m.routes {
		var byClass [5]prometheus.Counter
		for i, class := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
			byClass[i] = requests.WithLabelValues(names[0], names[1], class)
		}
		m.requests = append(m.requests, byClass)
		var byEnd [ends]prometheus.Counter
		for i, name := range endNames {
			byEnd[i] = ended.WithLabelValues(names[0], names[1], name)
		}
		m.ended = append(m.ended, byEnd)
	}

	connectErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailcut_upstream_connect_errors_total", Help: "Connections to a backend that failed or timed out.",
	}, []string{"cluster"})
	timeouts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailcut_upstream_timeouts_total", Help: "Backends that did not connect or send response headers in time (504).",
	}, []string{"cluster"})
	m.connectErrors, m.timeouts = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for name := range cfg.Upstreams {
		m.connectErrors[name] = connectErrors.WithLabelValues(name)
		m.timeouts[name] = timeouts.WithLabelValues(name)
	}

	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tailcut_connections_active", Help: "Client connections open now.",
	}, []string{"listener"})
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailcut_connections_total", Help: "Client connections accepted.",
	}, []string{"listener"})
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailcut_tls_handshake_failures_total", Help: "TLS handshakes that failed or timed out, on listeners with TLS.",
	}, []string{"listener"})
	for _, l := range cfg.Listeners {
		m.connActive = append(m.connActive, active.WithLabelValues(l.Name))
		m.connTotal = append(m.connTotal, total.WithLabelValues(l.Name))
		var failures prometheus.Counter
		if l.TLS != nil {
			failures = handshakes.WithLabelValues(l.Name)
		}
		m.tlsFailures = append(m.tlsFailures, failures)
	}
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tailcut_access_log_dropped_total", Help: "Access log lines dropped because the writer fell behind.",
	})

	m.latency = newLatencyRecorder(len(m.routes), cfg.Window)
	m.registry.MustRegister(requests, ended, connectErrors, timeouts, active, total, handshakes, dropped,
		&latencyCollector{m: m})
	if cfg.AccessLog.Enabled {
		m.accessLog = startAccessLog(cfg.AccessLog, dropped)
	}
	return m
}

// exchange is what the middleware learns about one request as it passes;
// it travels in the request context so the proxy and transport can fill in
// the route and the upstream time.
type exchange struct {
	started  time.Time
	headers  time.Duration // 0 until the response headers are written
	status   int
	bytes    int64
	route    int           // -1: no route matched
	upstream time.Duration // -1 until the upstream body has ended
	// The client left before response headers: not recorded, as tailcut
	// records nothing for a request whose response never started.
	abandoned bool
}

type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// Middleware records every request's latencies and counts, as tailcut's
// RecordLatency layer does: it is the outermost handler, and a request ends
// when the handler returns (the body has been copied) or panics with
// http.ErrAbortHandler (ReverseProxy's signal that the copy failed).
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := &exchange{started: time.Now(), route: -1, upstream: -1}
		rw := &recordingWriter{ResponseWriter: w, ex: ex}
		r = r.WithContext(context.WithValue(r.Context(), exchangeKey{}, ex))
		defer func() {
			if p := recover(); p != nil {
				// The copy failed: the client went away, or the upstream body broke.
				outcome := endError
				if r.Context().Err() != nil {
					outcome = endClientGone
				}
				m.finish(ex, outcome)
				panic(p)
			}
			m.finish(ex, endComplete)
		}()
		next.ServeHTTP(rw, r)
	})
}

func (m *Metrics) finish(ex *exchange, outcome end) {
	if ex.abandoned {
		return
	}
	now := time.Now()
	total := now.Sub(ex.started)
	if ex.status == 0 {
		ex.status = http.StatusOK // what net/http sends for a handler that wrote nothing
		ex.headers = total
	}
	slot := ex.route
	if slot < 0 || slot >= len(m.routes)-1 {
		slot = len(m.routes) - 1
	}
	class := min(max(ex.status/100, 1), 5) - 1
	m.requests[slot][class].Inc()
	m.ended[slot][outcome].Inc()
	values := [figures]time.Duration{ex.headers, total, ex.upstream, total - ex.upstream}
	recorded := figHeaders + 2
	if ex.upstream >= 0 {
		recorded = figures
	}
	m.latency.record(slot, outcome, values[:recorded])
	if m.accessLog != nil {
		m.accessLog.write(now, m.routes[slot], ex, outcome)
	}
}

// recordingWriter notes the status, when the headers went out, and the body
// bytes. Unwrap lets http.ResponseController (which ReverseProxy uses to
// flush, hijack for WebSocket and enable full duplex) reach the real writer.
type recordingWriter struct {
	http.ResponseWriter
	ex *exchange
}

func (w *recordingWriter) WriteHeader(code int) {
	// 1xx responses other than 101 are interim; the final status follows.
	if w.ex.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.ex.status = code
		w.ex.headers = time.Since(w.ex.started)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if w.ex.status == 0 {
		w.ex.status = http.StatusOK
		w.ex.headers = time.Since(w.ex.started)
	}
	n, err := w.ResponseWriter.Write(b)
	w.ex.bytes += int64(n)
	return n, err
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// timedTransport measures the upstream's own time: from handing the request
// to the connection pool to reading the end of the upstream body.
type timedTransport struct{ inner http.RoundTripper }

func (t timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ex := exchangeFrom(r.Context())
	sent := time.Now()
	res, err := t.inner.RoundTrip(r)
	if err != nil || ex == nil {
		return res, err
	}
	if res.Body == nil || res.Body == http.NoBody || res.ContentLength == 0 {
		ex.upstream = time.Since(sent)
		return res, nil
	}
	res.Body = &timedBody{ReadCloser: res.Body, ex: ex, sent: sent}
	return res, nil
}

type timedBody struct {
	io.ReadCloser
	ex   *exchange
	sent time.Time
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && b.ex.upstream < 0 {
		b.ex.upstream = time.Since(b.sent)
	}
	return n, err
}

// upstreamError counts a failed exchange by cluster, as tailcut does.
func (m *Metrics) upstreamError(cluster string, err error) {
	var opErr *net.OpError
	dial := errors.As(err, &opErr) && opErr.Op == "dial"
	var netErr net.Error
	timeout := errors.As(err, &netErr) && netErr.Timeout()
	if dial {
		m.connectErrors[cluster].Inc()
	}
	if timeout {
		m.timeouts[cluster].Inc()
	}
}

// latencyRecorder keeps HdrHistograms (1 us to 60 s, 3 significant digits)
// per (route slot, end, figure). Requests record into one of several
// shards, picked at random, each behind its own mutex, so concurrent
// requests rarely meet. The reader swaps each shard's active set with its
// spare set (a pointer swap under the lock), merges the taken set into a
// ring of window slots and a since-start total, and resets it to become
// the next spare: no histogram is allocated once both sets exist.
// (Go has no cheap per-thread storage, so sharded mutexes are the Go
// equivalent of tailcut's per-thread recorders.)
type latencyRecorder struct {
	shards     []latencyShard
	series     int
	slotLength time.Duration

	mu    sync.Mutex // reader side only
	slots []latencySlot
	total []*hdrhistogram.Histogram
}

const windowSlots = 6

type latencyShard struct {
	mu         sync.Mutex
	histograms []*hdrhistogram.Histogram // recorded into, under mu
	spare      []*hdrhistogram.Histogram // reset, owned by the reader
	_          [32]byte                  // keeps neighbouring shards' mutexes off one cache line
}

type latencySlot struct {
	start      time.Time
	histograms []*hdrhistogram.Histogram
}

func newLatencyRecorder(routeSlots int, window time.Duration) *latencyRecorder {
	series := routeSlots * int(ends) * int(figures)
	r := &latencyRecorder{
		// Two shards per P keep concurrent requests apart without paying
		// for histograms no goroutine will use.
		shards:     make([]latencyShard, 2*runtime.GOMAXPROCS(0)),
		series:     series,
		slotLength: window / windowSlots,
		total:      make([]*hdrhistogram.Histogram, series),
	}
	for i := range r.shards {
		r.shards[i].histograms = make([]*hdrhistogram.Histogram, series)
		r.shards[i].spare = make([]*hdrhistogram.Histogram, series)
	}
	return r
}

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, highestMicros, 3) }

func seriesIndex(slot int, e end, f figure) int { return (slot*int(ends)+int(e))*int(figures) + int(f) }

func (r *latencyRecorder) record(slot int, e end, values []time.Duration) {
	shard := &r.shards[rand.Uint32()%uint32(len(r.shards))]
	shard.mu.Lock()
	for f, v := range values {
		i := seriesIndex(slot, e, figure(f))
		if shard.histograms[i] == nil {
			shard.histograms[i] = newHistogram()
		}
		_ = shard.histograms[i].RecordValue(min(max(v.Microseconds(), 1), highestMicros))
	}
	shard.mu.Unlock()
}

// read takes in what the shards hold, moves the window, and calls view with
// the reader lock held.
func (r *latencyRecorder) read(view func(r *latencyRecorder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	kept := r.slots[:0]
	for _, s := range r.slots {
		if now.Sub(s.start) < r.slotLength*windowSlots {
			kept = append(kept, s)
		}
	}
	r.slots = kept
	if len(r.slots) == 0 || now.Sub(r.slots[0].start) >= r.slotLength {
		r.slots = append([]latencySlot{{start: now, histograms: make([]*hdrhistogram.Histogram, r.series)}}, r.slots...)
	}
	for i := range r.shards {
		shard := &r.shards[i]
		shard.mu.Lock()
		taken := shard.histograms
		shard.histograms, shard.spare = shard.spare, nil
		shard.mu.Unlock()
		for s, h := range taken {
			if h == nil || h.TotalCount() == 0 {
				continue
			}
			for _, target := range [][]*hdrhistogram.Histogram{r.slots[0].histograms, r.total} {
				if target[s] == nil {
					target[s] = newHistogram()
				}
				target[s].Merge(h)
			}
			h.Reset()
		}
		shard.spare = taken // only the reader touches spare, under r.mu
	}
	view(r)
}

// histogram merges the series of (slot, figure) over the ends given, for
// the window (window true) or since start. Call inside read.
func (r *latencyRecorder) histogram(slot int, f figure, endsWanted []end, window bool) *hdrhistogram.Histogram {
	merged := newHistogram()
	for _, e := range endsWanted {
		i := seriesIndex(slot, e, f)
		if !window {
			if r.total[i] != nil {
				merged.Merge(r.total[i])
			}
			continue
		}
		for _, s := range r.slots {
			if s.histograms[i] != nil {
				merged.Merge(s.histograms[i])
			}
		}
	}
	return merged
}

var allEnds = []end{endComplete, endError, endClientGone}

// latencyCollector exposes the window's quantiles under tailcut's names.
type latencyCollector struct{ m *Metrics }

var (
	latencyDesc = prometheus.NewDesc("tailcut_latency_seconds",
		"Latency quantiles over the window (quantile 1 is the maximum); figure: headers, total, upstream, proxy",
		[]string{"route", "cluster", "figure", "quantile"}, nil)
	samplesDesc = prometheus.NewDesc("tailcut_latency_window_samples",
		"Samples behind the latency quantiles", []string{"route", "cluster", "figure"}, nil)
	quantiles = []struct {
		q     float64
		label string
	}{{50, "0.5"}, {90, "0.9"}, {99, "0.99"}, {99.9, "0.999"}, {99.99, "0.9999"}, {100, "1"}}
)

func (c *latencyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- latencyDesc
	ch <- samplesDesc
}

func (c *latencyCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.latency.read(func(r *latencyRecorder) {
		for slot, names := range c.m.routes {
			for f := figHeaders; f < figures; f++ {
				h := r.histogram(slot, f, allEnds, true)
				if h.TotalCount() == 0 {
					continue
				}
				for _, q := range quantiles {
					seconds := float64(h.ValueAtPercentile(q.q)) / 1e6
					ch <- prometheus.MustNewConstMetric(latencyDesc, prometheus.GaugeValue, seconds,
						names[0], names[1], figureNames[f], q.label)
				}
				ch <- prometheus.MustNewConstMetric(samplesDesc, prometheus.GaugeValue, float64(h.TotalCount()),
					names[0], names[1], figureNames[f])
			}
		}
	})
}

// tlsHandshakeFailure counts a failed handshake on TLS listener number listener.
func (m *Metrics) tlsHandshakeFailure(listener int) func() {
	counter := m.tlsFailures[listener]
	if counter == nil {
		return func() {}
	}
	return counter.Inc
}

// connection counts an accepted client connection; the returned func ends it.
func (m *Metrics) connection(listener int) func() {
	m.connTotal[listener].Inc()
	m.connActive[listener].Inc()
	return m.connActive[listener].Dec
}
