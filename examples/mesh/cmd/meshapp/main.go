// Command meshapp is the demo's two-service app (examples/mesh/app.yaml): `meshapp server`
// serves HTTPS with its workload certificate and authenticates mesh clients by theirs;
// `meshapp client` calls the server over mutual TLS every few seconds and prints the answer;
// `meshapp probe` makes one such call (the client's readiness probe). Both sides trust only
// the mesh root the key broker put in the TLS dir, so a pod that did not attest cannot take
// part. The workload certificate, key and mesh root are the agent's files in $TLS_DIR
// (default /var/run/sealpod/tls): cert.pem (leaf + intermediate), key.pem, ca.pem.
package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: meshapp server|client|probe")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "server":
		var srv *http.Server
		var ln net.Listener
		if srv, err = newServer(); err == nil {
			if ln, err = net.Listen("tcp", env("LISTEN", ":8443")); err == nil {
				err = serve(ctx, srv, ln)
			}
		}
	case "client":
		err = clientLoop(ctx)
	case "probe":
		var msg string
		if msg, err = call(ctx); err == nil {
			fmt.Println(msg)
		}
	default:
		err = fmt.Errorf("unknown mode %q (server|client|probe)", os.Args[1])
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "meshapp:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// identity loads the workload certificate and the mesh root from $TLS_DIR.
func identity() (tls.Certificate, *x509.CertPool, error) {
	dir := env("TLS_DIR", "/var/run/sealpod/tls")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("workload certificate in %s: %w", dir, err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("mesh root: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("mesh root %s/ca.pem: no certificate", dir)
	}
	return cert, roots, nil
}

// peerName is the mesh identity of a verified client: its SPIFFE URI, else its first DNS name.
func peerName(c *x509.Certificate) string {
	for _, u := range c.URIs {
		return u.String()
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}

// newServer reads the identity and the sealed settings from the environment.
func newServer() (*http.Server, error) {
	cert, roots, err := identity()
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	self := peerName(leaf)
	greeting := env("GREETING", "hello from the mesh")
	token := os.Getenv("API_TOKEN")
	mux := http.NewServeMux()
	// "/" answers anyone who trusts the mesh root (curl --cacert verify/mesh-root.pem).
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		who := "an anonymous client (no workload certificate)"
		if len(r.TLS.VerifiedChains) > 0 {
			who = peerName(r.TLS.VerifiedChains[0][0])
		}
		fmt.Fprintf(w, "%s — served by %s (%s) to %s\n", greeting, self, strings.Join(leaf.DNSNames, ", "), who)
	})
	// "/mesh" only for attested workloads of the mesh that also hold the sealed API token.
	mux.HandleFunc("/mesh", func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "mesh only: present a workload certificate of this mesh", http.StatusForbidden)
			return
		}
		if token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
			http.Error(w, "mesh: wrong API token", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "%s — mTLS from %s to %s\n", greeting, peerName(r.TLS.VerifiedChains[0][0]), self)
	})
	fmt.Printf("meshapp server: %s (%s)\n", self, strings.Join(leaf.DNSNames, ", "))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(quietProbes{os.Stderr}, "", log.LstdFlags),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    roots,
		},
	}, nil
}

func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("meshapp server: listening on %s\n", ln.Addr())
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ctx.Err()
}

// quietProbes drops the handshake errors of plain TCP connects (the kubelet's tcpSocket
// readiness probe opens and closes a connection without TLS) and passes everything else.
type quietProbes struct{ w io.Writer }

func (q quietProbes) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("TLS handshake error")) && bytes.HasSuffix(bytes.TrimSpace(p), []byte(": EOF")) {
		return len(p), nil
	}
	return q.w.Write(p)
}

// call makes one mutual-TLS request to $WEB_URL, checking the server's certificate for
// $WEB_SERVER_NAME against the mesh root.
func call(ctx context.Context) (string, error) {
	cert, roots, err := identity()
	if err != nil {
		return "", err
	}
	url := env("WEB_URL", "https://web:8443/mesh")
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			RootCAs:      roots,
			ServerName:   os.Getenv("WEB_SERVER_NAME"), // empty: the URL's host
		}},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if t := os.Getenv("API_TOKEN"); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return strings.TrimSpace(string(body)), nil
}

func clientLoop(ctx context.Context) error {
	interval, err := time.ParseDuration(env("INTERVAL", "5s"))
	if err != nil {
		return fmt.Errorf("INTERVAL: %w", err)
	}
	for {
		if msg, err := call(ctx); err != nil {
			fmt.Println("meshapp client: error:", err)
		} else {
			fmt.Println("meshapp client:", msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
