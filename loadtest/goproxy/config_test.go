package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

const minimal = `
[[listeners]]
name = "main"
address = "127.0.0.1:0"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = ["127.0.0.1:9000"]
`

func TestMinimalConfigGetsTailcutsDefaults(t *testing.T) {
	cfg, err := ParseConfig("t.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"drain", cfg.DrainTimeout, 30 * time.Second},
		{"connect", cfg.ConnectTimeout, time.Second},
		{"request_header", cfg.RequestHeaderTimeout, 10 * time.Second},
		{"upstream_response_header", cfg.UpstreamResponseHeaderTimeout, 30 * time.Second},
		{"idle", cfg.IdleTimeout, 60 * time.Second},
		{"request", cfg.RequestTimeout, time.Duration(0)},
		{"max_header_bytes", cfg.MaxHeaderBytes, 32 * 1024},
		{"max_headers", cfg.MaxHeaders, 100},
		{"max_connections", cfg.Listeners[0].MaxConnections, 10_000},
		{"path_prefix", cfg.Routes[0].PathPrefix, "/"},
		{"max_idle_per_backend", cfg.Upstreams["app"].MaxIdlePerBackend, 64},
		{"pool_idle_timeout", cfg.Upstreams["app"].PoolIdleTimeout, 90 * time.Second},
		{"admin", cfg.AdminAddress.String(), "127.0.0.1:9901"},
		{"window", cfg.Window, 60 * time.Second},
		{"access_log", cfg.AccessLog, AccessLogConfig{Enabled: false, Path: "-", BufferLines: 4096}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestReusePortIsOffUnlessSet(t *testing.T) {
	for _, tc := range []struct {
		extra string
		want  bool
	}{
		{"", false},
		{"\n[server]\nreuse_port = true\n", true},
		{"\n[server]\nreuse_port = false\n", false},
	} {
		cfg, err := ParseConfig("t.toml", []byte(minimal+tc.extra))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ReusePort != tc.want {
			t.Errorf("%q: ReusePort = %v, want %v", tc.extra, cfg.ReusePort, tc.want)
		}
	}
}

func TestTheExampleConfigParses(t *testing.T) {
	source, err := os.ReadFile("../../config/tailcut.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("tailcut.toml", source)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 2 || cfg.Routes[0].Host != "api.localhost" || len(cfg.Upstreams["api"].Backends) != 2 {
		t.Errorf("unexpected config: %+v", cfg)
	}
}

func TestInvalidConfigsNameLineColumnAndKey(t *testing.T) {
	cases := []struct {
		name   string
		source string
		want   string
	}{
		{"bad address", strings.Replace(minimal, `"127.0.0.1:0"`, `"127.0.0.1:99999"`, 1),
			`t.toml:4:11: listeners[0].address: "127.0.0.1:99999" is not a socket address`},
		{"bad backend", strings.Replace(minimal, `["127.0.0.1:9000"]`, `["127.0.0.1:9000", "nope"]`, 1),
			`t.toml:11:31: upstreams.app.backends[1]: "nope" is not a socket address`},
		{"unknown key", minimal + "\n[timeouts]\nconect = \"1s\"\n",
			`t.toml:14:1: timeouts.conect: unknown key`},
		{"wrong type", minimal + "\n[limits]\nmax_headers = \"many\"\n",
			`t.toml:14:15: limits.max_headers: expected an integer, found a string`},
		{"syntax", "[limits\n",
			`t.toml:1:8: (document): expected ']' to close table name`},
		{"undefined upstream", strings.Replace(minimal, `upstream = "app"`, `upstream = "ap"`, 1),
			`t.toml:8:12: routes[0].upstream: no upstream named "ap" is defined`},
		{"zero duration", minimal + "\n[timeouts]\nidle = \"0s\"\n",
			`t.toml:14:8: timeouts.idle: "0s" must be longer than zero`},
		{"not a duration", minimal + "\n[server]\ndrain_timeout = \"soon\"\n",
			`t.toml:14:17: server.drain_timeout: "soon" is not a duration; write e.g. "250ms", "10s", "2m"`},
		{"too long", minimal + "\n[timeouts]\nconnect = \"9000h\"\n",
			`t.toml:14:11: timeouts.connect: "9000h" is longer than the maximum of 365 days`},
		{"negative count", minimal + "\n[limits]\nmax_headers = -1\n",
			`t.toml:14:15: limits.max_headers: -1 must not be negative`},
		{"zero count", minimal + "\n[limits]\nmax_connections_per_listener = 0\n",
			`t.toml:14:32: limits.max_connections_per_listener: must be greater than zero`},
		{"small header limit", minimal + "\n[limits]\nmax_header_bytes = 100\n",
			`t.toml:14:20: limits.max_header_bytes: 100 is below the minimum of 8192`},
		{"relative prefix", strings.Replace(minimal, `name = "all"`, "name = \"all\"\npath_prefix = \"api\"", 1),
			`t.toml:8:15: routes[0].path_prefix: "api" must start with '/'`},
		{"host with scheme", strings.Replace(minimal, `name = "all"`, "name = \"all\"\nhost = \"http://x\"", 1),
			`t.toml:8:8: routes[0].host: "http://x" is not a host name (no scheme, path or spaces)`},
		{"versioned upgrade", strings.Replace(minimal, `upstream = "app"`, "upstream = \"app\"\nupgrades = [\"h2c\", \"websocket/13\"]", 1),
			`t.toml:9:20: routes[0].upgrades[1]: "websocket/13" is not a protocol name (a token such as "websocket", without a version)`},
		{"load-aware balancing", minimal + "balance = \"peak_ewma\"\n",
			`t.toml:12:11: upstreams.app.balance: "peak_ewma": the Go proxy balances round-robin only; write "round_robin" or leave it out`},
		{"no backends", strings.Replace(minimal, `["127.0.0.1:9000"]`, `[]`, 1),
			`t.toml:11:1: upstreams.app.backends: at least one backend is required`},
		{"twice the same name", minimal + "\n[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:1\"\n",
			`t.toml:14:8: listeners[1].name: "main" is used twice`},
		{"admin address", minimal + "\n[admin]\naddress = \"localhost:9901\"\n",
			`t.toml:14:11: admin.address: "localhost:9901" is not a socket address`},
		{"short window", minimal + "\n[admin]\nwindow = \"100ms\"\n",
			`t.toml:14:10: admin.window: must be at least 1s: the window moves in steps of a sixth of it`},
		{"access log buffer", minimal + "\n[access_log]\nbuffer_lines = 0\n",
			`t.toml:14:16: access_log.buffer_lines: must be greater than zero`},
		{"no listeners", "[[routes]]\nname = \"r\"\nupstream = \"u\"\n[upstreams.u]\nbackends = [\"127.0.0.1:1\"]\n",
			`t.toml: listeners: at least one listener is required`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig("t.toml", []byte(c.source))
			var invalid *ConfigError
			if !errors.As(err, &invalid) {
				t.Fatalf("want a ConfigError, got %v", err)
			}
			if err.Error() != c.want {
				t.Errorf("got  %s\nwant %s", err, c.want)
			}
		})
	}
}
