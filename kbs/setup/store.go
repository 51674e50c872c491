package setup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/bolt"
	"github.com/sealpod/sealpod/kbs/store/etcd"
)

// OpenStore opens the store named by url with the store key:
//
//	bolt:///abs/path/kbs.db                                  embedded, one file (the default)
//	etcd://host:port[,host:port]/prefix[?cacert=F&cert=F&key=F]   replicated
//
// etcd with cacert uses TLS (cert/key: client certificate, optional). Without TLS the
// endpoints must be loopback addresses unless "insecure=true" is given (logged loudly):
// values are encrypted, but a network attacker could replay or delete them.
func OpenStore(url string, key []byte) (store.Store, error) {
	switch {
	case strings.HasPrefix(url, "bolt://"):
		path := strings.TrimPrefix(url, "bolt://")
		if path == "" {
			return nil, fmt.Errorf("store %q: no file path", url)
		}
		return bolt.Open(path, key, nil)
	case strings.HasPrefix(url, "etcd://"):
		eu, err := ParseEtcdURL(url)
		if err != nil {
			return nil, err
		}
		opts := &etcd.Options{}
		if eu.CACert != "" {
			if opts.TLS, err = eu.tlsConfig(); err != nil {
				return nil, fmt.Errorf("store %s: %w", url, err)
			}
		} else if !eu.loopbackOnly() {
			if !eu.Insecure {
				return nil, fmt.Errorf("store %s: plaintext etcd on a non-loopback address: give ?cacert=FILE (TLS) or ?insecure=true", url)
			}
			slog.Warn("INSECURE: etcd store over plaintext gRPC on a non-loopback network; stored values are encrypted but can be replayed or deleted by the network", "endpoints", eu.Endpoints)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return etcd.Open(ctx, eu.Endpoints, eu.Prefix, key, opts)
	default:
		return nil, fmt.Errorf("store %q: want bolt:///path/kbs.db or etcd://host:port[,host:port]/prefix", url)
	}
}

// EtcdURL is a parsed etcd:// store URL.
type EtcdURL struct {
	Endpoints []string // http(s)://host:port
	Prefix    string
	CACert    string // TLS: CA file
	Cert, Key string // TLS: client certificate and key files
	Insecure  bool   // plaintext on a non-loopback network allowed
	hosts     []string
}

// ParseEtcdURL parses "etcd://host:port[,host:port]/prefix[?cacert=F&cert=F&key=F&insecure=true]"
// (prefix default etcd.DefaultPrefix).
func ParseEtcdURL(raw string) (*EtcdURL, error) {
	rest, ok := strings.CutPrefix(raw, "etcd://")
	if !ok {
		return nil, fmt.Errorf("store %q: not an etcd:// URL", raw)
	}
	rest, query, _ := strings.Cut(rest, "?")
	hosts, prefix, _ := strings.Cut(rest, "/")
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("store %q: query: %w", raw, err)
	}
	eu := &EtcdURL{Prefix: etcd.DefaultPrefix, CACert: q.Get("cacert"), Cert: q.Get("cert"), Key: q.Get("key"), Insecure: q.Get("insecure") == "true"}
	for k := range q {
		switch k {
		case "cacert", "cert", "key", "insecure":
		default:
			return nil, fmt.Errorf("store %q: unknown parameter %q (want cacert, cert, key, insecure)", raw, k)
		}
	}
	if (eu.Cert == "") != (eu.Key == "") {
		return nil, fmt.Errorf("store %q: cert and key go together", raw)
	}
	if eu.Cert != "" && eu.CACert == "" {
		return nil, fmt.Errorf("store %q: a client certificate needs cacert (TLS)", raw)
	}
	if prefix != "" {
		eu.Prefix = "/" + prefix
	}
	scheme := "http://"
	if eu.CACert != "" {
		scheme = "https://"
	}
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("store %q: endpoint %q: want host:port", raw, h)
		}
		eu.hosts = append(eu.hosts, host)
		eu.Endpoints = append(eu.Endpoints, scheme+h)
	}
	if len(eu.Endpoints) == 0 {
		return nil, errors.New("store " + raw + ": no etcd endpoints")
	}
	return eu, nil
}

func (eu *EtcdURL) loopbackOnly() bool {
	for _, h := range eu.hosts {
		if h == "localhost" {
			continue
		}
		ip := net.ParseIP(h)
		if ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

func (eu *EtcdURL) tlsConfig() (*tls.Config, error) {
	ca, err := os.ReadFile(eu.CACert)
	if err != nil {
		return nil, fmt.Errorf("etcd cacert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("etcd cacert %s: no PEM certificate", eu.CACert)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if eu.Cert != "" {
		c, err := tls.LoadX509KeyPair(eu.Cert, eu.Key)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}
