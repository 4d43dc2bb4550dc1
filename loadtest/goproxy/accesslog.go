package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// accessLog writes one JSON line per request from a goroutine of its own.
// The request path offers each line to a buffered channel without waiting;
// when the writer has fallen behind and the buffer is full, the line is
// dropped and counted in tailcut_access_log_dropped_total, as in tailcut.
type accessLog struct {
	lines   chan []byte
	dropped prometheus.Counter
}

// accessLine has tailcut's access log fields, in its order.
type accessLine struct {
	Timestamp  string `json:"timestamp"`
	Route      string `json:"route"`
	Cluster    string `json:"cluster"`
	Status     int    `json:"status"`
	Bytes      int64  `json:"bytes"`
	End        string `json:"end"`
	TotalUs    int64  `json:"total_us"`
	UpstreamUs *int64 `json:"upstream_us"`
}

func startAccessLog(cfg AccessLogConfig, dropped prometheus.Counter) *accessLog {
	l := &accessLog{lines: make(chan []byte, cfg.BufferLines), dropped: dropped}
	go func() {
		// Opened here, not at start-up: a FIFO blocks until it has a reader.
		var out io.Writer = os.Stdout
		if cfg.Path != "-" {
			file, err := os.OpenFile(cfg.Path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				slog.Error("cannot open the access log", "path", cfg.Path, "cause", err.Error())
				return
			}
			out = file
		}
		w := bufio.NewWriter(out)
		for line := range l.lines {
			_, err := w.Write(line)
			// Write what is queued, then flush once the queue is empty.
			for more := true; more && err == nil; {
				select {
				case next := <-l.lines:
					_, err = w.Write(next)
				default:
					more = false
				}
			}
			if err == nil {
				err = w.Flush()
			}
			if err != nil {
				slog.Error("access log write failed; stopping it", "path", cfg.Path, "cause", err.Error())
				return
			}
		}
	}()
	return l
}

func (l *accessLog) write(at time.Time, names [2]string, ex *exchange, outcome end) {
	line := accessLine{
		Timestamp: at.UTC().Format("2006-01-02T15:04:05.000000Z"),
		Route:     names[0], Cluster: names[1],
		Status: ex.status, Bytes: ex.bytes, End: endNames[outcome],
		TotalUs: at.Sub(ex.started).Microseconds(),
	}
	if ex.upstream >= 0 {
		us := ex.upstream.Microseconds()
		line.UpstreamUs = &us
	}
	text, err := json.Marshal(line)
	if err != nil {
		return
	}
	select {
	case l.lines <- append(text, '\n'):
	default:
		l.dropped.Inc()
	}
}
