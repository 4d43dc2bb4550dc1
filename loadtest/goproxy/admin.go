package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves tailcut's admin paths: /metrics (Prometheus text),
// /latency (.hgrm, or JSON with Accept: application/json), /live, /ready.
func adminHandler(m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /latency", m.serveLatency)
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "live\n") })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ready\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not found: try /metrics, /latency, /live, /ready", http.StatusNotFound)
	})
	return mux
}

// serveAdmin runs the admin listener and moves the latency window every
// second, so that it moves even when nobody reads it.
func serveAdmin(listener net.Listener, m *Metrics) *http.Server {
	srv := &http.Server{Handler: adminHandler(m), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(listener) }()
	go func() {
		for range time.Tick(time.Second) {
			m.latency.read(func(*latencyRecorder) {})
		}
	}()
	return srv
}

func (m *Metrics) serveLatency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	routeName := q.Get("route")
	slot := -1
	for i, names := range m.routes[:len(m.routes)-1] {
		if names[0] == routeName {
			slot = i
		}
	}
	if routeName == "" {
		http.Error(w, "route=NAME is required", http.StatusBadRequest)
		return
	}
	if slot < 0 {
		http.Error(w, fmt.Sprintf("no route named %q", routeName), http.StatusNotFound)
		return
	}
	figureName := q.Get("figure")
	if figureName == "" {
		figureName = "total"
	}
	f := figure(-1)
	for i, name := range figureNames {
		if name == figureName {
			f = figure(i)
		}
	}
	if f < 0 {
		http.Error(w, fmt.Sprintf("figure %q is not one of headers, total, upstream, proxy", figureName), http.StatusBadRequest)
		return
	}
	wanted := allEnds
	if name := q.Get("end"); name != "" {
		wanted = nil
		for i, n := range endNames {
			if n == name {
				wanted = []end{end(i)}
			}
		}
		if wanted == nil {
			http.Error(w, fmt.Sprintf("end %q is not one of complete, error, client_gone", name), http.StatusBadRequest)
			return
		}
	}
	scope := q.Get("scope")
	if scope == "" {
		scope = "window"
	}
	if scope != "window" && scope != "total" {
		http.Error(w, fmt.Sprintf("scope %q is not window or total", scope), http.StatusBadRequest)
		return
	}
	var text []byte
	var body map[string]any
	m.latency.read(func(rec *latencyRecorder) {
		h := rec.histogram(slot, f, wanted, scope == "window")
		if r.Header.Get("Accept") != "application/json" {
			var buf textBuffer
			_, _ = h.PercentilesPrint(&buf, 5, 1000) // microseconds -> milliseconds
			text = buf
			return
		}
		percentiles := []map[string]any{}
		if h.TotalCount() > 0 {
			for _, b := range h.CumulativeDistributionWithTicks(5) {
				percentiles = append(percentiles, map[string]any{"quantile": b.Quantile / 100, "value_us": b.ValueAt})
			}
		}
		body = map[string]any{
			"route": routeName, "figure": figureName, "scope": scope, "count": h.TotalCount(),
			"min_us": h.Min(), "max_us": h.Max(), "mean_us": h.Mean(), "percentiles": percentiles,
		}
	})
	if body == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(text)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

type textBuffer []byte

func (b *textBuffer) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}
