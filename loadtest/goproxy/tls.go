package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// certificateSchema is one [[listeners.tls.certificates]] table.
type certificateSchema struct {
	Chain string   `toml:"chain"`
	Key   string   `toml:"key"`
	Names []string `toml:"names"`
}

// listenerTLS is a listener's TLS configuration as tailcut reads it: the
// certificate chosen by the SNI names the config lists (case-insensitive),
// the first certificate for any other name or none; TLS 1.2 and 1.3; ALPN
// h2 then http/1.1. Paths are relative to the config file's folder.
func (v *validator) listenerTLS(key, base string, certs []certificateSchema) (*tls.Config, error) {
	if len(certs) == 0 {
		return nil, v.fail(key+".certificates", "at least one certificate is required (the first is the default)")
	}
	byName := map[string]*tls.Certificate{}
	var fallback *tls.Certificate
	for i, c := range certs {
		certKey := fmt.Sprintf("%s.certificates[%d]", key, i)
		chain, keyFile := relativeTo(base, c.Chain), relativeTo(base, c.Key)
		if _, err := os.Stat(chain); err != nil {
			return nil, v.fail(certKey+".chain", "%s: cannot read: %v", chain, err)
		}
		if _, err := os.Stat(keyFile); err != nil {
			return nil, v.fail(certKey+".key", "%s: cannot read: %v", keyFile, err)
		}
		// LoadX509KeyPair also checks that the key belongs to the leaf.
		pair, err := tls.LoadX509KeyPair(chain, keyFile)
		if err != nil {
			return nil, v.fail(certKey+".key", "%s with %s: %v", keyFile, chain, err)
		}
		if fallback == nil {
			fallback = &pair
		}
		for j, name := range c.Names {
			if !validHost(name) {
				return nil, v.fail(fmt.Sprintf("%s.names[%d]", certKey, j), "%q is not a host name (no scheme, path or spaces)", name)
			}
			byName[strings.ToLower(name)] = &pair
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert, ok := byName[strings.ToLower(hello.ServerName)]; ok {
				return cert, nil
			}
			return fallback, nil
		},
	}, nil
}

// relativeTo resolves path against base unless it is absolute
// (filepath.Join would put base in front of an absolute path too).
func relativeTo(base, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(base, path)
}

// upstreamTLS is an upstream cluster's client TLS: the backends' certificates
// verified against the ca bundle (or the system roots), for serverName (or,
// when empty, each backend's IP address, which Go takes from the dialled
// address); ALPN http/1.1, as the upstream hops are HTTP/1.1.
func (v *validator) upstreamTLS(key, base string, ca *string, serverName *string) (*tls.Config, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if serverName != nil {
		if !validHost(*serverName) {
			return nil, v.fail(key+".server_name", "%q is not a host name (no scheme, path or spaces)", *serverName)
		}
		config.ServerName = *serverName
	}
	if ca != nil {
		path := relativeTo(base, *ca)
		bundle, err := os.ReadFile(path)
		if err != nil {
			return nil, v.fail(key+".ca", "%s: cannot read: %v", path, err)
		}
		roots := x509.NewCertPool()
		if block, _ := pem.Decode(bundle); block == nil || !roots.AppendCertsFromPEM(bundle) {
			return nil, v.fail(key+".ca", "%s: holds no PEM certificate", path)
		}
		config.RootCAs = roots
	}
	return config, nil
}

// handshakeCounter is an http.Server's error log that counts failed TLS
// handshakes for tailcut_tls_handshake_failures_total: net/http reports
// them only as "http: TLS handshake error from ..." lines on ErrorLog.
// Every line still goes on to forward.
type handshakeCounter struct {
	count   func()
	forward io.Writer
}

func (h handshakeCounter) Write(line []byte) (int, error) {
	if bytes.Contains(line, []byte("TLS handshake error")) {
		h.count()
	}
	return h.forward.Write(line)
}
