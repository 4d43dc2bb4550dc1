package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCertificate writes a self-signed certificate for name and its key,
// as NAME.pem and NAME.key in dir.
func writeCertificate(t *testing.T, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDer, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, kind string, bytes []byte) {
		data := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: bytes})
		if err := os.WriteFile(filepath.Join(dir, file), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".pem", "CERTIFICATE", der)
	write(name+".key", "PRIVATE KEY", keyDer)
}

// tlsConfig is minimal plus a TLS listener with the given certificate tables.
func tlsConfig(tables string) string {
	return strings.Replace(minimal, `address = "127.0.0.1:0"`, `address = "127.0.0.1:0"`+"\n"+tables, 1)
}

func TestTLSCertificatesAreChosenByTheirNamesAndTheFirstIsTheDefault(t *testing.T) {
	dir := t.TempDir()
	writeCertificate(t, dir, "default.test")
	writeCertificate(t, dir, "a.test")
	source := tlsConfig(`
[[listeners.tls.certificates]]
chain = "default.test.pem"
key = "default.test.key"
[[listeners.tls.certificates]]
chain = "a.test.pem"
key = "a.test.key"
names = ["A.test"]
`)
	cfg, err := ParseConfig(filepath.Join(dir, "t.toml"), []byte(source))
	if err != nil {
		t.Fatal(err)
	}
	config := cfg.Listeners[0].TLS
	if config == nil || config.MinVersion != tls.VersionTLS12 || strings.Join(config.NextProtos, ",") != "h2,http/1.1" {
		t.Fatalf("TLS config: %+v", config)
	}
	for sni, want := range map[string]string{"a.test": "a.test", "A.TEST": "a.test", "other.test": "default.test", "": "default.test"} {
		cert, err := config.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if leaf.DNSNames[0] != want {
			t.Errorf("SNI %q got the certificate for %s, want %s", sni, leaf.DNSNames[0], want)
		}
	}
}

func TestUnusableCertificateFilesNameTheKeyAndTheFile(t *testing.T) {
	dir := t.TempDir()
	writeCertificate(t, dir, "a.test")
	writeCertificate(t, dir, "b.test")
	for _, tc := range []struct{ tables, want string }{
		{"[[listeners.tls.certificates]]\nchain = \"missing.pem\"\nkey = \"a.test.key\"\n",
			"listeners[0].tls.certificates[0].chain: " + filepath.Join(dir, "missing.pem") + ": cannot read"},
		{"[[listeners.tls.certificates]]\nchain = \"a.test.pem\"\nkey = \"b.test.key\"\n",
			"listeners[0].tls.certificates[0].key: " + filepath.Join(dir, "b.test.key") + " with "},
		{"[listeners.tls]\ncertificates = []\n",
			"listeners[0].tls.certificates: at least one certificate is required"},
	} {
		_, err := ParseConfig(filepath.Join(dir, "t.toml"), []byte(tlsConfig(tc.tables)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want it to contain %q", tc.tables, err, tc.want)
		}
	}
}
