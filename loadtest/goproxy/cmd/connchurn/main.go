// Command connchurn opens new connections to a local port at a steady rate
// for a bounded time, over TLS (the certificate is not verified) or in
// cleartext, sends one GET on each, reads the response to its end and
// closes. It prints how many exchanges succeeded and how many failed.
//
// benches/tls.sh runs it beside tailcut-load on the load core, to measure
// whether new TLS connections stall requests already in flight. It does the
// same work as a Python client with a fraction of the CPU, so it disturbs
// the generator it shares a core with much less.
//
//	connchurn -port 18183 -rate 200 -seconds 10 [-plain]
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1 to connect to")
	rate := flag.Float64("rate", 200, "new connections per second")
	seconds := flag.Float64("seconds", 10, "how long to keep opening them")
	plain := flag.Bool("plain", false, "cleartext instead of TLS")
	flag.Parse()
	if *port <= 0 || *port > 65535 || *rate <= 0 || *seconds <= 0 || *rate**seconds > 1e6 {
		fmt.Fprintln(os.Stderr, "connchurn: need -port, a positive -rate and -seconds, at most 10^6 connections")
		os.Exit(2)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	// No session cache: every connection is a full handshake.
	config := &tls.Config{InsecureSkipVerify: true, ServerName: "bench.test"}
	total := int(*rate * *seconds)
	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range total {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := exchange(addr, config, *plain); err != nil {
				failed.Add(1)
			} else {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Println(ok.Load(), failed.Load())
}

// exchange makes one connection, one GET, and reads the response to the end.
func exchange(addr string, config *tls.Config, plain bool) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if !plain {
		conn = tls.Client(conn, config)
	}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, conn)
	if err == nil && n == 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}
