package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Config is the validated configuration: the subset of tailcut's TOML that
// the Go proxy implements, with tailcut's defaults. Nothing past Load is a
// raw string.
type Config struct {
	DrainTimeout time.Duration
	// ReusePort binds every listener and the admin listener with
	// SO_REUSEPORT, so a new process can bind them while this one drains.
	ReusePort bool

	ConnectTimeout                time.Duration
	RequestHeaderTimeout          time.Duration
	UpstreamResponseHeaderTimeout time.Duration
	IdleTimeout                   time.Duration
	ClientWriteTimeout            time.Duration // a client accepting no bytes for this long is cut
	RequestTimeout                time.Duration // 0: no limit

	MaxHeaderBytes       int
	MaxHeaders           int
	MaxConcurrentStreams int // HTTP/2 streams per connection

	Listeners []Listener
	Routes    []Route
	Upstreams map[string]Upstream

	AdminAddress netip.AddrPort
	Window       time.Duration // latency window of /metrics and /latency

	AccessLog AccessLogConfig
}

// AccessLogConfig: one JSON line per request, written off the request path.
type AccessLogConfig struct {
	Enabled     bool
	Path        string // "-" is standard output
	BufferLines int
}

// Listener is one listening socket.
type Listener struct {
	Name           string
	Address        netip.AddrPort
	MaxConnections int
	TLS            *tls.Config // nil: cleartext HTTP/1.1 and h2c
}

// Route sends requests matching Host (port ignored, case-insensitive; empty
// matches any host) and PathPrefix to the cluster named Upstream.
type Route struct {
	Name       string
	Host       string
	PathPrefix string
	Upstream   string
	// MaxBodyBytes is the largest request body accepted; 0: no limit.
	MaxBodyBytes int64
	// Upgrades lists the protocols (lower-case) a client may switch to
	// through this route; any other Upgrade is dropped before forwarding.
	Upgrades []string
}

// Upstream is a cluster of interchangeable backends, used round-robin.
type Upstream struct {
	Backends          []netip.AddrPort
	MaxIdlePerBackend int
	PoolIdleTimeout   time.Duration
	TLS               *tls.Config // nil: cleartext
}

// The same bounds as tailcut's: longer durations and larger counts are typos.
const (
	maxDuration    = 365 * 24 * time.Hour
	maxCount       = 1 << 30
	minHeaderBytes = 8192
)

// ConfigError is a config problem located in its file: "file:line:col: key: message".
type ConfigError struct {
	File         string
	Line, Column int // 0 when the problem has no single place (a missing table)
	Key          string
	Message      string
}

func (e *ConfigError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Column, e.Key, e.Message)
}

// The file schema, as go-toml decodes it. Values that need checking beyond
// their TOML type stay strings or ints here; validate turns them into types.
type fileSchema struct {
	Server struct {
		DrainTimeout *string `toml:"drain_timeout"`
		ReusePort    *bool   `toml:"reuse_port"`
	} `toml:"server"`
	Timeouts struct {
		Connect                *string `toml:"connect"`
		RequestHeader          *string `toml:"request_header"`
		UpstreamResponseHeader *string `toml:"upstream_response_header"`
		Idle                   *string `toml:"idle"`
		ClientWrite            *string `toml:"client_write"`
		Request                *string `toml:"request"`
	} `toml:"timeouts"`
	Limits struct {
		MaxHeaderBytes            *int64 `toml:"max_header_bytes"`
		MaxHeaders                *int64 `toml:"max_headers"`
		MaxConnectionsPerListener *int64 `toml:"max_connections_per_listener"`
		MaxConcurrentStreams      *int64 `toml:"max_concurrent_streams"`
	} `toml:"limits"`
	Listeners []struct {
		Name           string `toml:"name"`
		Address        string `toml:"address"`
		MaxConnections *int64 `toml:"max_connections"`
		TLS            *struct {
			Certificates []certificateSchema `toml:"certificates"`
		} `toml:"tls"`
	} `toml:"listeners"`
	Routes []struct {
		Name         string    `toml:"name"`
		Host         *string   `toml:"host"`
		PathPrefix   *string   `toml:"path_prefix"`
		Upstream     string    `toml:"upstream"`
		MaxBodyBytes *int64    `toml:"max_body_bytes"`
		Upgrades     *[]string `toml:"upgrades"`
	} `toml:"routes"`
	Upstreams map[string]struct {
		Backends          []string `toml:"backends"`
		MaxIdlePerBackend *int64   `toml:"max_idle_per_backend"`
		PoolIdleTimeout   *string  `toml:"pool_idle_timeout"`
		Balance           *string  `toml:"balance"`
		TLS               *struct {
			CA         *string `toml:"ca"`
			ServerName *string `toml:"server_name"`
		} `toml:"tls"`
	} `toml:"upstreams"`
	Admin struct {
		Address *string `toml:"address"`
		Window  *string `toml:"window"`
	} `toml:"admin"`
	AccessLog struct {
		Enabled     *bool   `toml:"enabled"`
		Path        *string `toml:"path"`
		BufferLines *int64  `toml:"buffer_lines"`
	} `toml:"access_log"`
}

// LoadConfig reads and validates the config at path.
func LoadConfig(path string) (*Config, error) {
	source, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	return ParseConfig(path, source)
}

// ParseConfig decodes source (read from file) strictly and validates it.
func ParseConfig(file string, source []byte) (*Config, error) {
	var raw fileSchema
	decoder := toml.NewDecoder(bytes.NewReader(source))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&raw); err != nil {
		return nil, decodeError(file, err)
	}
	v := validator{file: file, keys: locateKeys(source)}
	return v.config(&raw)
}

// decodeError turns go-toml's errors, which carry positions, into a ConfigError.
func decodeError(file string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		first := strict.Errors[0]
		line, col := first.Position()
		return &ConfigError{file, line, col, strings.Join(first.Key(), "."), "unknown key"}
	}
	var decode *toml.DecodeError
	if errors.As(err, &decode) {
		line, col := decode.Position()
		key := strings.Join(decode.Key(), ".")
		if key == "" {
			key = "(document)"
		}
		return &ConfigError{file, line, col, key, plainMessage(strings.TrimPrefix(decode.Error(), "toml: "))}
	}
	return &ConfigError{File: file, Key: "(document)", Message: err.Error()}
}

// plainMessage rewrites go-toml's type errors, which name Go struct types,
// in the file's terms: "cannot decode TOML string into struct field
// ....MaxHeaders of type int64" becomes "expected an integer, found a string".
func plainMessage(message string) string {
	found, ok := strings.CutPrefix(message, "cannot decode TOML ")
	if !ok {
		return message
	}
	found, _, _ = strings.Cut(found, " ")
	if found == "" {
		return message
	}
	_, goType, _ := strings.Cut(message, " of type ")
	expected, ok := map[string]string{
		"int64": "an integer", "string": "a string", "[]string": "an array of strings",
	}[strings.TrimPrefix(goType, "*")]
	if !ok {
		return message
	}
	article := "a"
	if strings.ContainsAny(found[:1], "aeiou") {
		article = "an"
	}
	return fmt.Sprintf("expected %s, found %s %s", expected, article, found)
}

type validator struct {
	file string
	keys map[string]position
}

// base is the config file's folder, which certificate paths are relative to.
func (v *validator) base() string { return filepath.Dir(v.file) }

// fail reports a problem with the value at key, located when the key is in the file.
func (v *validator) fail(key, format string, args ...any) error {
	at := v.keys[key]
	return &ConfigError{v.file, at.line, at.column, key, fmt.Sprintf(format, args...)}
}

func (v *validator) config(raw *fileSchema) (*Config, error) {
	c := &Config{Upstreams: map[string]Upstream{}}
	var err error
	c.ReusePort = raw.Server.ReusePort != nil && *raw.Server.ReusePort
	durations := []struct {
		key, fallback string
		value         *string
		out           *time.Duration
	}{
		{"server.drain_timeout", "30s", raw.Server.DrainTimeout, &c.DrainTimeout},
		{"timeouts.connect", "1s", raw.Timeouts.Connect, &c.ConnectTimeout},
		{"timeouts.request_header", "10s", raw.Timeouts.RequestHeader, &c.RequestHeaderTimeout},
		{"timeouts.upstream_response_header", "30s", raw.Timeouts.UpstreamResponseHeader, &c.UpstreamResponseHeaderTimeout},
		{"timeouts.idle", "60s", raw.Timeouts.Idle, &c.IdleTimeout},
		{"timeouts.client_write", "60s", raw.Timeouts.ClientWrite, &c.ClientWriteTimeout},
	}
	for _, d := range durations {
		if *d.out, err = v.duration(d.key, d.value, d.fallback); err != nil {
			return nil, err
		}
	}
	if raw.Timeouts.Request != nil {
		if c.RequestTimeout, err = v.duration("timeouts.request", raw.Timeouts.Request, ""); err != nil {
			return nil, err
		}
	}

	if c.MaxHeaderBytes, err = v.count("limits.max_header_bytes", raw.Limits.MaxHeaderBytes, 32*1024, 1); err != nil {
		return nil, err
	}
	if c.MaxHeaderBytes < minHeaderBytes {
		return nil, v.fail("limits.max_header_bytes", "%d is below the minimum of %d", c.MaxHeaderBytes, minHeaderBytes)
	}
	if c.MaxHeaders, err = v.count("limits.max_headers", raw.Limits.MaxHeaders, 100, 1); err != nil {
		return nil, err
	}
	defaultMaxConns, err := v.count("limits.max_connections_per_listener", raw.Limits.MaxConnectionsPerListener, 10_000, 1)
	if err != nil {
		return nil, err
	}
	if c.MaxConcurrentStreams, err = v.count("limits.max_concurrent_streams", raw.Limits.MaxConcurrentStreams, 100, 1); err != nil {
		return nil, err
	}

	// In name order, so that of several bad clusters the same one is reported each time.
	for _, name := range slices.Sorted(maps.Keys(raw.Upstreams)) {
		u := raw.Upstreams[name]
		key := "upstreams." + name
		if len(u.Backends) == 0 {
			return nil, v.fail(key+".backends", "at least one backend is required")
		}
		up := Upstream{}
		for i, b := range u.Backends {
			addr, err := v.socketAddr(fmt.Sprintf("%s.backends[%d]", key, i), b)
			if err != nil {
				return nil, err
			}
			up.Backends = append(up.Backends, addr)
		}
		if up.MaxIdlePerBackend, err = v.count(key+".max_idle_per_backend", u.MaxIdlePerBackend, 64, 0); err != nil {
			return nil, err
		}
		if up.PoolIdleTimeout, err = v.duration(key+".pool_idle_timeout", u.PoolIdleTimeout, "90s"); err != nil {
			return nil, err
		}
		// This proxy balances as httputil users do: round-robin. The key is
		// read so that a config naming that policy runs on both proxies.
		if u.Balance != nil && *u.Balance != "round_robin" {
			return nil, v.fail(key+".balance", "%q: the Go proxy balances round-robin only; write \"round_robin\" or leave it out", *u.Balance)
		}
		if u.TLS != nil {
			if up.TLS, err = v.upstreamTLS(key+".tls", v.base(), u.TLS.CA, u.TLS.ServerName); err != nil {
				return nil, err
			}
		}
		c.Upstreams[name] = up
	}

	c.AdminAddress = netip.MustParseAddrPort("127.0.0.1:9901")
	if raw.Admin.Address != nil {
		if c.AdminAddress, err = v.socketAddr("admin.address", *raw.Admin.Address); err != nil {
			return nil, err
		}
	}
	if c.Window, err = v.duration("admin.window", raw.Admin.Window, "60s"); err != nil {
		return nil, err
	}
	if c.Window < time.Second {
		return nil, v.fail("admin.window", "must be at least 1s: the window moves in steps of a sixth of it")
	}
	c.AccessLog = AccessLogConfig{Enabled: raw.AccessLog.Enabled != nil && *raw.AccessLog.Enabled, Path: "-"}
	if raw.AccessLog.Path != nil {
		c.AccessLog.Path = *raw.AccessLog.Path
	}
	if c.AccessLog.BufferLines, err = v.count("access_log.buffer_lines", raw.AccessLog.BufferLines, 4096, 1); err != nil {
		return nil, err
	}

	if len(raw.Listeners) == 0 {
		return nil, v.fail("listeners", "at least one listener is required")
	}
	names := map[string]bool{}
	addresses := map[netip.AddrPort]bool{}
	for i, l := range raw.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		if err := v.name(key+".name", l.Name, names); err != nil {
			return nil, err
		}
		addr, err := v.socketAddr(key+".address", l.Address)
		if err != nil {
			return nil, err
		}
		if addr.Port() != 0 && addresses[addr] {
			return nil, v.fail(key+".address", "%s is already used by another listener", addr)
		}
		addresses[addr] = true
		maxConns, err := v.count(key+".max_connections", l.MaxConnections, int64(defaultMaxConns), 1)
		if err != nil {
			return nil, err
		}
		listener := Listener{Name: l.Name, Address: addr, MaxConnections: maxConns}
		if l.TLS != nil {
			if listener.TLS, err = v.listenerTLS(key+".tls", v.base(), l.TLS.Certificates); err != nil {
				return nil, err
			}
		}
		c.Listeners = append(c.Listeners, listener)
	}

	if len(raw.Routes) == 0 {
		return nil, v.fail("routes", "at least one route is required")
	}
	names = map[string]bool{}
	for i, r := range raw.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if err := v.name(key+".name", r.Name, names); err != nil {
			return nil, err
		}
		route := Route{Name: r.Name, PathPrefix: "/", Upstream: r.Upstream}
		if r.Host != nil {
			if !validHost(*r.Host) {
				return nil, v.fail(key+".host", "%q is not a host name (no scheme, path or spaces)", *r.Host)
			}
			route.Host = strings.ToLower(*r.Host)
		}
		if r.PathPrefix != nil {
			if !strings.HasPrefix(*r.PathPrefix, "/") {
				return nil, v.fail(key+".path_prefix", "%q must start with '/'", *r.PathPrefix)
			}
			route.PathPrefix = *r.PathPrefix
		}
		if _, ok := c.Upstreams[r.Upstream]; !ok {
			return nil, v.fail(key+".upstream", "no upstream named %q is defined", r.Upstream)
		}
		if r.MaxBodyBytes != nil {
			if *r.MaxBodyBytes <= 0 {
				return nil, v.fail(key+".max_body_bytes", "%d must be greater than zero", *r.MaxBodyBytes)
			}
			route.MaxBodyBytes = *r.MaxBodyBytes
		}
		route.Upgrades = []string{"websocket"}
		if r.Upgrades != nil {
			route.Upgrades = nil
			for j, protocol := range *r.Upgrades {
				if !validToken(protocol) {
					return nil, v.fail(fmt.Sprintf("%s.upgrades[%d]", key, j),
						"%q is not a protocol name (a token such as \"websocket\", without a version)", protocol)
				}
				route.Upgrades = append(route.Upgrades, strings.ToLower(protocol))
			}
		}
		c.Routes = append(c.Routes, route)
	}
	return c, nil
}

// validToken reports whether s is an HTTP token (RFC 9110 section 5.6.2).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

// duration parses Go's duration syntax ("250ms", "10s", "2m", "1h30m"), which
// covers the forms tailcut's example config uses.
func (v *validator) duration(key string, value *string, fallback string) (time.Duration, error) {
	text := fallback
	if value != nil {
		text = *value
	}
	d, err := time.ParseDuration(text)
	switch {
	case err != nil:
		return 0, v.fail(key, "%q is not a duration; write e.g. \"250ms\", \"10s\", \"2m\"", text)
	case d > maxDuration:
		return 0, v.fail(key, "%q is longer than the maximum of 365 days", text)
	case d <= 0:
		return 0, v.fail(key, "%q must be longer than zero", text)
	}
	return d, nil
}

// count checks an optional integer against [min, maxCount].
func (v *validator) count(key string, value *int64, fallback, min int64) (int, error) {
	n := fallback
	if value != nil {
		n = *value
	}
	switch {
	case n < 0:
		return 0, v.fail(key, "%d must not be negative", n)
	case n < min:
		return 0, v.fail(key, "must be greater than zero")
	case n > maxCount:
		return 0, v.fail(key, "%d is above the maximum of %d", n, maxCount)
	}
	return int(n), nil
}

func (v *validator) socketAddr(key, text string) (netip.AddrPort, error) {
	addr, err := netip.ParseAddrPort(text)
	if err != nil {
		return netip.AddrPort{}, v.fail(key, "%q is not a socket address", text)
	}
	return addr, nil
}

func (v *validator) name(key, name string, seen map[string]bool) error {
	if name == "" {
		return v.fail(key, "must not be empty")
	}
	if seen[name] {
		return v.fail(key, "%q is used twice", name)
	}
	seen[name] = true
	return nil
}

func validHost(host string) bool {
	if host == "" {
		return false
	}
	for _, c := range host {
		ok := c < 128 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.ContainsRune(".-_[]:", c))
		if !ok {
			return false
		}
	}
	return true
}
