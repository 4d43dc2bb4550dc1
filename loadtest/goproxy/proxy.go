package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Via is the pseudonym this proxy adds to Via headers, as tailcut adds "tailcut".
const via = "goproxy"

// Proxy is the request path: route, then the matched cluster's ReverseProxy.
// It does the same work per request as tailcut: routing, header hygiene,
// X-Forwarded-*, Via, pooled keep-alive upstream connections, streamed bodies.
type Proxy struct {
	routes         []route
	maxHeaders     int
	requestTimeout time.Duration // 0: no limit
	log            *slog.Logger
}

type route struct {
	Route
	index   int // in config order, for metrics
	cluster *cluster
}

// cluster is one upstream cluster: its own Transport (so its pool settings
// are its own) and a ReverseProxy that picks backends round-robin.
type cluster struct {
	name     string
	backends []string // "IP:port"
	scheme   string   // "https" for a cluster with TLS
	next     atomic.Uint64
	proxy    *httputil.ReverseProxy
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers, so streaming a body
// allocates nothing per request once warm.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.pool.Get().(*[]byte)) }
func (b *bufferPool) Put(p []byte) { b.pool.Put(&p) }

// NewProxy builds the request path from a validated config; upstream
// failures and upstream times go to metrics.
func NewProxy(cfg *Config, log *slog.Logger, metrics *Metrics) *Proxy {
	buffers := newBufferPool()
	clusters := map[string]*cluster{}
	for name, up := range cfg.Upstreams {
		clusters[name] = newCluster(name, up, cfg, buffers, log, metrics)
	}
	p := &Proxy{maxHeaders: cfg.MaxHeaders, requestTimeout: cfg.RequestTimeout, log: log}
	for i, r := range cfg.Routes {
		p.routes = append(p.routes, route{Route: r, index: i, cluster: clusters[r.Upstream]})
	}
	return p
}

func newCluster(name string, up Upstream, cfg *Config, buffers *bufferPool, log *slog.Logger, metrics *Metrics) *cluster {
	c := &cluster{name: name, scheme: "http"}
	if up.TLS != nil {
		c.scheme = "https"
	}
	for _, b := range up.Backends {
		c.backends = append(c.backends, b.String())
	}
	transport := &http.Transport{
		// Backends are addressed directly; an environment proxy must not apply.
		Proxy: nil,
		// Go sets TCP_NODELAY on every TCP connection by default.
		DialContext: (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		// The default of 2 idle connections per host would make the proxy
		// re-dial under any concurrency; tailcut keeps max_idle_per_backend.
		MaxIdleConns:        0, // no overall cap: the per-backend cap is the limit
		MaxIdleConnsPerHost: up.MaxIdlePerBackend,
		IdleConnTimeout:     up.PoolIdleTimeout,
		// Counted from when the request and its body have been written, as tailcut counts.
		ResponseHeaderTimeout: cfg.UpstreamResponseHeaderTimeout,
		// A proxy relays bytes: no Accept-Encoding added, nothing decompressed.
		DisableCompression: true,
		// Upstream hops are HTTP/1.1, as tailcut's are.
		ForceAttemptHTTP2: false,
		// Verified against the cluster's CA bundle, or the system roots; nil for cleartext.
		TLSClientConfig: up.TLS,
	}
	c.proxy = &httputil.ReverseProxy{
		Rewrite:   c.rewrite,
		Transport: timedTransport{inner: transport},
		// Write each chunk to the client as soon as it arrives: streaming, not buffering.
		FlushInterval:  -1,
		BufferPool:     buffers,
		ModifyResponse: addResponseVia,
		ErrorHandler:   c.errorHandler(log, metrics),
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return c
}

// ServeHTTP routes the request, or answers 431 or 404 itself.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// net/http limits header bytes but not how many fields there are;
	// tailcut's parser caps the count, so the same cap is applied here.
	if countHeaders(r) > p.maxHeaders {
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestHeaderFieldsTooLarge, "too many headers\n")
		return
	}
	rt := p.match(r.Host, r.URL.EscapedPath())
	if rt == nil {
		p.log.Debug("request rejected", "status", http.StatusNotFound,
			"cause", fmt.Sprintf("no route matches host %q path %q", r.Host, r.URL.Path))
		writeError(w, http.StatusNotFound, "no route\n")
		return
	}
	// An upstream may answer while the request body is still streaming in
	// (an echo, an early error). By default an HTTP/1 handler that starts its
	// response can no longer read the request body; tailcut streams both
	// ways at once, so this proxy does too.
	if r.ProtoMajor == 1 && r.Body != http.NoBody {
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	if ex := exchangeFrom(r.Context()); ex != nil {
		ex.route = rt.index
	}
	// A client may switch only to the protocols its route lists; any other
	// Upgrade is dropped and the request forwarded as a plain one, so a
	// backend's 101 to it fails ReverseProxy's check (502).
	if up := r.Header.Get("Upgrade"); up != "" && !upgradeAllowed(up, rt.Upgrades) {
		r.Header.Del("Upgrade")
	}
	if limit := rt.MaxBodyBytes; limit > 0 {
		// Known up front: refused without reading the body or calling the
		// backend. Otherwise counted as it streams: reading past the limit
		// fails the upstream request, which errorHandler answers with 413.
		if r.ContentLength > limit {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large\n")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	// A client that sent Expect: 100-continue waits for the interim 100
	// before sending its body. net/http sends it on the body's first read,
	// unless the response has started by then, and an upstream may answer
	// before the transport first reads the body (an echo streams its
	// response head at once). Then the client would get the final response
	// first and the connection would close. Reading nothing sends the 100
	// now, once the request is known to be forwarded.
	if r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		_, _ = r.Body.Read(nil)
	}
	if p.requestTimeout > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), p.requestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	rt.cluster.proxy.ServeHTTP(w, r)
}

// upgradeAllowed reports whether an Upgrade value offers a protocol in
// allowed, compared by name ("websocket" allows "WebSocket/13").
func upgradeAllowed(upgrade string, allowed []string) bool {
	for _, token := range strings.Split(upgrade, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(token), "/")
		for _, a := range allowed {
			if strings.EqualFold(name, a) {
				return true
			}
		}
	}
	return false
}

// countHeaders counts header fields as they arrived, Host included (net/http
// moves Host out of the map).
func countHeaders(r *http.Request) int {
	n := 0
	if r.Host != "" {
		n++
	}
	for _, values := range r.Header {
		n += len(values)
	}
	return n
}

// match returns the first route whose host and path prefix match.
func (p *Proxy) match(host, path string) *route {
	host = withoutPort(host)
	for i := range p.routes {
		rt := &p.routes[i]
		if rt.Host != "" && !strings.EqualFold(rt.Host, host) {
			continue
		}
		if strings.HasPrefix(path, rt.PathPrefix) {
			return rt
		}
	}
	return nil
}

// withoutPort: "example.com:8080" -> "example.com"; "[::1]:8080" -> "[::1]".
func withoutPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if end := strings.IndexByte(host, ']'); end >= 0 {
			return host[:end+1]
		}
		return host
	}
	colon := strings.LastIndexByte(host, ':')
	if colon < 0 {
		return host
	}
	for _, c := range host[colon+1:] {
		if c < '0' || c > '9' {
			return host
		}
	}
	return host[:colon]
}

// rewrite turns the inbound request into the outbound one. ReverseProxy has
// already removed hop-by-hop headers (and the headers Connection names) and
// the inbound X-Forwarded-* headers; it keeps "TE: trailers" and re-adds
// Upgrade for WebSocket.
func (c *cluster) rewrite(pr *httputil.ProxyRequest) {
	backend := c.backends[(c.next.Add(1)-1)%uint64(len(c.backends))]
	pr.Out.URL.Scheme = c.scheme
	pr.Out.URL.Host = backend
	// Host is preserved; an HTTP/1.0 request without one gets the backend's.
	pr.Out.Host = pr.In.Host
	if pr.Out.Host == "" {
		pr.Out.Host = backend
	}
	rewriteHeaders(pr.In, pr.Out)
	pr.SetXForwarded()
	// The server fills in the request's trailers once its body has been
	// read; the outbound request is a clone holding a copy of the map taken
	// before that, so it would send them empty. Sharing the map relays them.
	pr.Out.Trailer = pr.In.Trailer
}

// rewriteHeaders applies the header rules that ReverseProxy leaves to the
// caller: the chain of X-Forwarded-For and Forwarded is kept (Rewrite drops
// them), Expect is answered here rather than forwarded, and Via gains a hop.
func rewriteHeaders(in, out *http.Request) {
	if chain := in.Header.Values("X-Forwarded-For"); len(chain) > 0 {
		out.Header["X-Forwarded-For"] = []string{strings.Join(chain, ", ")}
	}
	if forwarded := in.Header.Values("Forwarded"); len(forwarded) > 0 {
		out.Header["Forwarded"] = forwarded
	}
	out.Header.Del("Expect")
	out.Header.Add("Via", viaFor(in.ProtoMajor, in.ProtoMinor))
}

func viaFor(major, minor int) string {
	if major >= 2 {
		return fmt.Sprintf("%d %s", major, via)
	}
	return fmt.Sprintf("%d.%d %s", major, minor, via)
}

// addResponseVia runs after ReverseProxy has removed the response's hop-by-hop headers.
func addResponseVia(res *http.Response) error {
	res.Header.Add("Via", "1.1 "+via)
	return nil
}

// errorHandler maps a failed exchange to a status, in one place, as tailcut does:
// a timeout (connect, response headers, or the whole request) is 504, any
// other upstream failure 502. A client that went away gets nothing.
func (c *cluster) errorHandler(log *slog.Logger, metrics *Metrics) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, out *http.Request, err error) {
		ctx := out.Context()
		if errors.Is(ctx.Err(), context.Canceled) {
			log.Debug("client went away", "cause", err.Error())
			if ex := exchangeFrom(ctx); ex != nil {
				ex.abandoned = true
			}
			return
		}
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			log.Debug("request rejected", "status", http.StatusRequestEntityTooLarge,
				"cause", fmt.Sprintf("request body over the route's limit of %d bytes", tooLarge.Limit))
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large\n")
			return
		}
		if metrics != nil {
			metrics.upstreamError(c.name, err)
		}
		status, text := http.StatusBadGateway, "bad gateway: upstream failed\n"
		var netErr net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout() {
			status, text = http.StatusGatewayTimeout, "gateway timeout: upstream too slow\n"
		}
		log.Warn("request failed", "status", status,
			"cause", fmt.Sprintf("upstream %s (%s): %v", c.name, out.URL.Host, err))
		writeError(w, status, text)
	}
}

// writeError sends one of the proxy's own short text responses.
func writeError(w http.ResponseWriter, status int, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Via", "1.1 "+via)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text))
}
