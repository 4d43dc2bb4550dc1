package main

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// rejectingAtOnce bounds the over-limit connections being answered 503 at
// once; beyond it they are closed unanswered, as tailcut does.
const rejectingAtOnce = 64

// limitListener admits at most max connections at once. Over the limit a
// client is not left waiting in the accept queue (golang.org/x/net's
// netutil.LimitListener would block Accept); it gets a real HTTP 503 with
// Retry-After, served by a second http.Server that sees only those
// connections.
type limitListener struct {
	net.Listener
	slots     chan struct{} // one token per admitted connection
	rejecting atomic.Int32
	rejected  chan net.Conn // feeds the 503 server
	log       *slog.Logger
	metrics   *Metrics
	index     int // the listener's place in the config, for metrics
	// Per write on admitted connections: timeouts.client_write.
	writeTimeout time.Duration
}

func newLimitListener(inner net.Listener, listener Listener, headerTimeout time.Duration, log *slog.Logger, metrics *Metrics, index int) *limitListener {
	l := &limitListener{
		Listener: inner,
		slots:    make(chan struct{}, listener.MaxConnections),
		rejected: make(chan net.Conn),
		log:      log,
		metrics:  metrics,
		index:    index,
	}
	overload := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusServiceUnavailable, "overloaded: retry later\n")
		}),
		ReadHeaderTimeout: headerTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// On a TLS listener the 503 is sent over TLS too.
		TLSConfig: listener.TLS,
	}
	overload.SetKeepAlivesEnabled(false)
	go func() {
		if listener.TLS != nil {
			_ = overload.ServeTLS(chanListener{l}, "", "")
		} else {
			_ = overload.Serve(chanListener{l})
		}
	}()
	return l
}

// Accept returns the next connection within the limit, answering the ones over it.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			closed := l.metrics.connection(l.index)
			return &limitedConn{Conn: conn, release: func() { <-l.slots; closed() }, writeTimeout: l.writeTimeout}, nil
		default:
		}
		if l.rejecting.Add(1) > rejectingAtOnce {
			l.rejecting.Add(-1)
			_ = conn.Close()
			continue
		}
		l.log.Warn("request failed", "status", http.StatusServiceUnavailable,
			"cause", "listener is at its connection limit")
		go func() { l.rejected <- &limitedConn{Conn: conn, release: func() { l.rejecting.Add(-1) }} }()
	}
}

// limitedConn gives back its slot once, when it is closed (by the server,
// or by ReverseProxy after a WebSocket tunnel ends). Each write must finish
// within writeTimeout (timeouts.client_write), so a client that stops
// reading is cut off; net/http's WriteTimeout would bound the whole
// response instead, cutting slow downloads that still move.
type limitedConn struct {
	net.Conn
	once         sync.Once
	release      func()
	writeTimeout time.Duration // 0: none (the 503 connections, bounded otherwise)
}

func (c *limitedConn) Write(b []byte) (int, error) {
	if c.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	return c.Conn.Write(b)
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// chanListener hands the over-limit connections to the 503 server.
type chanListener struct{ l *limitListener }

func (c chanListener) Accept() (net.Conn, error) { return <-c.l.rejected, nil }
func (c chanListener) Close() error              { return nil }
func (c chanListener) Addr() net.Addr            { return c.l.Addr() }
