// Command stockproxy is the baseline that goproxy's tuning is measured
// against: httputil.NewSingleHostReverseProxy and http.ListenAndServe with
// every default (2 idle upstream connections per host, no timeouts, no
// buffer pool, no flush policy). It is a benchmark column, not a proxy to
// deploy.
//
//	stockproxy --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	upstream := flag.String("upstream", "http://127.0.0.1:9000", "URL of the one backend")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil {
		log.Fatalf("stockproxy: --upstream: %v", err)
	}
	log.Fatal(http.ListenAndServe(*listen, httputil.NewSingleHostReverseProxy(target)))
}
