package setup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/bolt"
	"github.com/sealpod/sealpod/kbs/store/etcd"
)

// OpenStore opens the store named by url with the store key:
//
//	bolt:///abs/path/kbs.db                 embedded, one file (the default)
//	etcd://host:port[,host:port]/prefix     replicated (plaintext gRPC: loopback / trusted network only)
func OpenStore(url string, key []byte) (store.Store, error) {
	switch {
	case strings.HasPrefix(url, "bolt://"):
		path := strings.TrimPrefix(url, "bolt://")
		if path == "" {
			return nil, fmt.Errorf("store %q: no file path", url)
		}
		return bolt.Open(path, key, nil)
	case strings.HasPrefix(url, "etcd://"):
		endpoints, prefix, err := ParseEtcdURL(url)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return etcd.Open(ctx, endpoints, prefix, key, nil)
	default:
		return nil, fmt.Errorf("store %q: want bolt:///path/kbs.db or etcd://host:port[,host:port]/prefix", url)
	}
}

// ParseEtcdURL splits "etcd://host:port[,host:port]/prefix" into endpoints and prefix
// (default etcd.DefaultPrefix).
func ParseEtcdURL(url string) ([]string, string, error) {
	rest, ok := strings.CutPrefix(url, "etcd://")
	if !ok {
		return nil, "", fmt.Errorf("store %q: not an etcd:// URL", url)
	}
	hosts, prefix, _ := strings.Cut(rest, "/")
	if prefix == "" {
		prefix = etcd.DefaultPrefix
	} else {
		prefix = "/" + prefix
	}
	var endpoints []string
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if !strings.Contains(h, ":") {
			return nil, "", fmt.Errorf("store %q: endpoint %q needs a port", url, h)
		}
		endpoints = append(endpoints, "http://"+h)
	}
	if len(endpoints) == 0 {
		return nil, "", errors.New("store " + url + ": no etcd endpoints")
	}
	return endpoints, prefix, nil
}
