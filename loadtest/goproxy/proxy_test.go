package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestWithoutPort(t *testing.T) {
	cases := map[string]string{
		"example.com":      "example.com",
		"example.com:8080": "example.com",
		"EXAMPLE.com:80":   "EXAMPLE.com",
		"[::1]:8080":       "[::1]",
		"[::1]":            "[::1]",
		"host:abc":         "host:abc",
		"":                 "",
	}
	for in, want := range cases {
		if got := withoutPort(in); got != want {
			t.Errorf("withoutPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUpgradeAllowedComparesProtocolNames(t *testing.T) {
	cases := []struct {
		upgrade string
		allowed []string
		want    bool
	}{
		{"websocket", []string{"websocket"}, true},
		{"WebSocket/13", []string{"websocket"}, true},
		{"h2c", []string{"websocket"}, false},
		{"h2c, websocket", []string{"websocket"}, true},
		{"websocket", nil, false},
	}
	for _, c := range cases {
		if got := upgradeAllowed(c.upgrade, c.allowed); got != c.want {
			t.Errorf("upgradeAllowed(%q, %q) = %v, want %v", c.upgrade, c.allowed, got, c.want)
		}
	}
}

func TestFirstMatchingRouteWins(t *testing.T) {
	p := &Proxy{routes: []route{
		{Route: Route{Name: "api", Host: "api.test", PathPrefix: "/v1/"}},
		{Route: Route{Name: "static", PathPrefix: "/static/"}},
		{Route: Route{Name: "api-any-path", Host: "api.test", PathPrefix: "/"}},
	}}
	cases := []struct {
		host, path, want string
	}{
		{"api.test", "/v1/users", "api"},
		{"API.test:443", "/v1/users", "api"},
		{"api.test", "/v2/users", "api-any-path"},
		{"other.test", "/static/app.js", "static"},
		{"api.test", "/static/app.js", "static"},
		{"other.test", "/v1/users", ""},
		{"", "/", ""},
	}
	for _, c := range cases {
		got := ""
		if rt := p.match(c.host, c.path); rt != nil {
			got = rt.Name
		}
		if got != c.want {
			t.Errorf("match(%q, %q) = %q, want %q", c.host, c.path, got, c.want)
		}
	}
}

// proxyTo starts the proxy in front of backend and returns its URL.
func proxyTo(t *testing.T, backend *httptest.Server, extra string) string {
	t.Helper()
	source := strings.Replace(minimal, "127.0.0.1:9000", backend.Listener.Addr().String(), 1) + extra
	cfg, err := ParseConfig("t.toml", []byte(source))
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(NewProxy(cfg, slog.New(slog.DiscardHandler), NewMetrics(cfg)))
	t.Cleanup(front.Close)
	return front.URL
}

func TestHeaderRules(t *testing.T) {
	seen := make(chan http.Header, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		seen <- h
		w.Header().Set("Connection", "x-private")
		w.Header().Set("X-Private", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "kept")
	}))
	defer backend.Close()
	url := proxyTo(t, backend, "")

	cases := []struct {
		name     string
		request  map[string]string
		upstream map[string]string // "" means absent
	}{
		{"hop-by-hop removed",
			map[string]string{"Connection": "x-named", "X-Named": "1", "Keep-Alive": "1", "Proxy-Connection": "1",
				"Proxy-Authorization": "Basic x", "Te": "gzip", "Upgrade": "h2c", "X-End": "kept"},
			map[string]string{"X-Named": "", "Keep-Alive": "", "Proxy-Connection": "", "Proxy-Authorization": "",
				"Te": "", "Upgrade": "", "X-End": "kept"}},
		{"TE trailers kept", map[string]string{"Te": "trailers"}, map[string]string{"Te": "trailers"}},
		{"forwarding headers started",
			map[string]string{"Host": "shop.test:8443"},
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "shop.test:8443",
				"X-Forwarded-Proto": "http", "Host": "shop.test:8443", "Via": "1.1 goproxy"}},
		{"forwarding chain extended, proto restated",
			map[string]string{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "Forwarded": "for=203.0.113.7"},
			map[string]string{"X-Forwarded-For": "203.0.113.7, 127.0.0.1", "X-Forwarded-Proto": "http",
				"Forwarded": "for=203.0.113.7"}},
		{"expect answered, not forwarded", map[string]string{"Expect": "100-continue"}, map[string]string{"Expect": ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
			for k, v := range c.request {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			got := <-seen
			for k, want := range c.upstream {
				if v := strings.Join(got.Values(k), ", "); v != want {
					t.Errorf("upstream %s = %q, want %q", k, v, want)
				}
			}
			for k, want := range map[string]string{"X-Private": "", "Keep-Alive": "", "X-End-To-End": "kept", "Via": "1.1 goproxy"} {
				if v := res.Header.Get(k); v != want {
					t.Errorf("client %s = %q, want %q", k, v, want)
				}
			}
		})
	}
}

func TestViaNamesTheClientsVersion(t *testing.T) {
	cases := []struct {
		major, minor int
		want         string
	}{{1, 0, "1.0 goproxy"}, {1, 1, "1.1 goproxy"}, {2, 0, "2 goproxy"}}
	for _, c := range cases {
		if got := viaFor(c.major, c.minor); got != c.want {
			t.Errorf("viaFor(%d, %d) = %q, want %q", c.major, c.minor, got, c.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestUpstreamErrorsBecomeStatuses(t *testing.T) {
	c := &cluster{name: "app"}
	handle := c.errorHandler(slog.New(slog.DiscardHandler), nil)
	cases := []struct {
		name       string
		err        error
		cancelled  bool
		wantStatus int
		wantBody   string
	}{
		{"refused", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false,
			http.StatusBadGateway, "bad gateway: upstream failed\n"},
		{"network timeout", fmt.Errorf("wrapped: %w", timeoutErr{}), false,
			http.StatusGatewayTimeout, "gateway timeout: upstream too slow\n"},
		{"request deadline", context.DeadlineExceeded, false,
			http.StatusGatewayTimeout, "gateway timeout: upstream too slow\n"},
		// A client that went away gets nothing: the recorder keeps its default 200 and no body.
		{"client gone", context.Canceled, true, http.StatusOK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if c.cancelled {
				cancel()
			}
			defer cancel()
			req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil).WithContext(ctx)
			rec := httptest.NewRecorder()
			handle(rec, req, c.err)
			if rec.Code != c.wantStatus || rec.Body.String() != c.wantBody {
				t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body.String(), c.wantStatus, c.wantBody)
			}
		})
	}
}

func TestResponseHeaderTimeoutIs504(t *testing.T) {
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer backend.Close()
	defer close(release)
	url := proxyTo(t, backend, "\n[timeouts]\nupstream_response_header = \"50ms\"\n")
	res, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", res.StatusCode)
	}
}

func TestRoundRobinVisitsEveryBackendInTurn(t *testing.T) {
	up := Upstream{Backends: []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"), netip.MustParseAddrPort("127.0.0.1:3"),
	}, MaxIdlePerBackend: 1, PoolIdleTimeout: time.Second}
	cfg := &Config{ConnectTimeout: time.Second, UpstreamResponseHeaderTimeout: time.Second}
	c := newCluster("app", up, cfg, newBufferPool(), slog.New(slog.DiscardHandler), nil)
	var got []string
	for range 6 {
		in := httptest.NewRequest(http.MethodGet, "http://a.test/", nil)
		out := in.Clone(context.Background())
		out.Header = in.Header.Clone()
		c.rewrite(&httputil.ProxyRequest{In: in, Out: out})
		got = append(got, out.URL.Host)
	}
	want := "127.0.0.1:1 127.0.0.1:2 127.0.0.1:3 127.0.0.1:1 127.0.0.1:2 127.0.0.1:3"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}
