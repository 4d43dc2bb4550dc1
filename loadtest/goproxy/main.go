// Command goproxy is the Go equivalent of tailcut: the same job, from the
// same TOML config, built on net/http and httputil.ReverseProxy, tuned as a
// Go engineer would tune it. It exists so that tailcut can be compared with
// a fair Go proxy; README.md lists every setting and why.
//
//	goproxy [run|check] [--config PATH] [--log-format pretty|json] [--log-level LEVEL] [--workers N]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit codes shared with tailcut (sysexits.h).
const (
	exitConfig     = 64 // the config is invalid
	exitNoInput    = 66 // the config cannot be read
	exitSoftware   = 70 // something else failed at start-up
	exitUsageError = 2  // the command line is wrong
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	command := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		command, args = args[0], args[1:]
	}
	flags := flag.NewFlagSet("goproxy "+command, flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", "config/tailcut.toml", "path to the TOML config (tailcut's format)")
	logFormat := flags.String("log-format", "pretty", "log format: pretty or json")
	logLevel := flags.String("log-level", "info", "least severe level logged: debug, info, warn, error")
	workers := flags.Int("workers", 0, "GOMAXPROCS; 0 keeps Go's default, the CPUs in the affinity mask")
	if err := flags.Parse(args); err != nil {
		return exitUsageError
	}
	if command != "run" && command != "check" {
		fmt.Fprintf(stderr, "goproxy: unknown command %q (want run or check)\n", command)
		return exitUsageError
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "goproxy: %v\n", err)
		return exitUsageError
	}
	if *workers > 0 {
		runtime.GOMAXPROCS(*workers)
	}

	cfg, err := LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "goproxy: %v\n", err)
		var invalid *ConfigError
		if errors.As(err, &invalid) {
			return exitConfig
		}
		return exitNoInput
	}
	if command == "check" {
		fmt.Printf("%+v\n", *cfg)
		return 0
	}
	if err := serve(cfg, log); err != nil {
		log.Error("goproxy failed", "cause", err.Error())
		return exitSoftware
	}
	return 0
}

// newLogger writes JSON lines shaped like tailcut's ("level", "message",
// fields), or text for people.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	options := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		options.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			switch {
			case len(groups) > 0:
			case a.Key == slog.MessageKey:
				a.Key = "message"
			case a.Key == slog.TimeKey:
				a.Key = "timestamp"
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, options)), nil
	case "pretty":
		return slog.New(slog.NewTextHandler(w, options)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither pretty nor json", format)
}

// serve binds every listener, serves until SIGTERM or SIGINT, then drains:
// listeners close, idle connections close, in-flight requests get up to the
// drain timeout to finish.
func serve(cfg *Config, log *slog.Logger) error {
	metrics := NewMetrics(cfg)
	// Outermost: latency recording, as in tailcut's stack.
	handler := metrics.Middleware(NewProxy(cfg, log, metrics))
	listen := listenConfig(cfg.ReusePort)
	adminListener, err := listen.Listen(context.Background(), "tcp", cfg.AdminAddress.String())
	if err != nil {
		return fmt.Errorf("listener admin: cannot bind %s: %w", cfg.AdminAddress, err)
	}
	var servers []*http.Server
	var described []string
	for i, l := range cfg.Listeners {
		inner, err := listen.Listen(context.Background(), "tcp", l.Address.String())
		if err != nil {
			return fmt.Errorf("listener %s: %w", l.Name, err)
		}
		listener := newLimitListener(inner, l, cfg.RequestHeaderTimeout, log, metrics, i)
		listener.writeTimeout = cfg.ClientWriteTimeout
		srv := newServer(cfg, l, handler, log, metrics, i)
		servers = append(servers, srv)
		described = append(described, fmt.Sprintf("%s=%s", l.Name, inner.Addr()))
		go func() {
			var err error
			if l.TLS != nil {
				// Certificates come from srv.TLSConfig, not files.
				err = srv.ServeTLS(listener, "", "")
			} else {
				err = srv.Serve(listener)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("listener failed", "listener", l.Name, "cause", err.Error())
			}
		}()
	}
	admin := serveAdmin(adminListener, metrics)
	metrics.ready.Store(true)
	log.Info("goproxy started", "listeners", strings.Join(described, ","),
		"admin", adminListener.Addr().String(), "gomaxprocs", runtime.GOMAXPROCS(0))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	log.Info("shutdown requested", "signal", (<-signals).String())

	metrics.ready.Store(false)
	log.Info("draining", "drain_timeout", cfg.DrainTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("drain timed out; closing the remaining connections", "cause", err.Error())
				_ = srv.Close()
			}
		}()
	}
	wg.Wait()
	_ = admin.Close()
	log.Info("drained; stopping")
	return nil
}

// newServer is one listener's http.Server: HTTP/1.1 and cleartext HTTP/2
// (prior knowledge) on the same socket, as tailcut serves them, or over
// TLS, HTTP/2 or HTTP/1.1 as ALPN chooses.
func newServer(cfg *Config, l Listener, handler http.Handler, log *slog.Logger, metrics *Metrics, index int) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if l.TLS != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	// Per-connection errors (bad requests, TLS-looking garbage, failed
	// handshakes) are the client's fault: debug, so a client cannot flood
	// the log. On a TLS listener, failed handshakes are also counted.
	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	if l.TLS != nil {
		counter := handshakeCounter{count: metrics.tlsHandshakeFailure(index), forward: errorLog.Writer()}
		errorLog = stdlog.New(counter, "", 0)
	}
	return &http.Server{
		TLSConfig: l.TLS,
		Handler:   handler,
		Protocols: &protocols,
		// Slowloris defence: the whole request head within this time.
		ReadHeaderTimeout: cfg.RequestHeaderTimeout,
		// Keep-alive connections with no request in flight close after this.
		IdleTimeout: cfg.IdleTimeout,
		// No ReadTimeout or WriteTimeout: they would cut off long uploads
		// and downloads, which tailcut streams without limit unless
		// timeouts.request is set (see Proxy.ServeHTTP).
		MaxHeaderBytes: cfg.MaxHeaderBytes,
		// SETTINGS_MAX_CONCURRENT_STREAMS, as tailcut's limits.max_concurrent_streams.
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: cfg.MaxConcurrentStreams},
		ErrorLog: errorLog,
	}
}

// listenConfig binds listeners, with SO_REUSEPORT when reusePort is set (as
// tailcut's server.reuse_port). Go sets SO_REUSEADDR on listeners itself.
func listenConfig(reusePort bool) net.ListenConfig {
	if !reusePort {
		return net.ListenConfig{}
	}
	return net.ListenConfig{Control: func(_, _ string, raw syscall.RawConn) error {
		var sockErr error
		err := raw.Control(func(fd uintptr) {
			sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return sockErr
	}}
}
