package installer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sealpod/sealpod/internal/tee"
)

// NodeLabeler sets this node's TEE labels.
type NodeLabeler interface {
	// SetTEELabels makes the node carry TEELabel(t)="true" for exactly the TEEs given: the
	// label of every other known TEE is removed (nil removes them all).
	SetTEELabels(ctx context.Context, tees []TEE) error
}

// In-cluster service-account files (the kubelet mounts them into every pod).
const (
	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// ErrNotInCluster: KUBERNETES_SERVICE_HOST/PORT or the service-account files are missing.
var ErrNotInCluster = errors.New("not running in a Kubernetes pod")

// KubeNodeLabeler patches a Node through the Kubernetes API with a bearer token: a JSON merge
// patch of metadata.labels, which needs only `patch` on `nodes` (see deploy/rbac.yaml).
type KubeNodeLabeler struct {
	// Server is the API server base URL, e.g. https://10.96.0.1:443.
	Server string
	// Token is the bearer token (service account).
	Token string
	// CAPEM is the PEM bundle the API server's certificate must chain to. Required.
	CAPEM []byte
	// NodeName is the Node object to patch (the DaemonSet passes spec.nodeName).
	NodeName string
	// Client overrides the HTTP client (tests); nil builds one from CAPEM.
	Client *http.Client
}

// InClusterNodeLabeler builds a KubeNodeLabeler from the pod's environment and service account.
func InClusterNodeLabeler(nodeName string) (*KubeNodeLabeler, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fmt.Errorf("in-cluster config: KUBERNETES_SERVICE_HOST/PORT unset: %w", ErrNotInCluster)
	}
	token, err := os.ReadFile(serviceAccountDir + "/token")
	if err != nil {
		return nil, fmt.Errorf("in-cluster config: %w: %w", err, ErrNotInCluster)
	}
	ca, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return nil, fmt.Errorf("in-cluster config: %w: %w", err, ErrNotInCluster)
	}
	if nodeName == "" {
		return nil, errors.New("in-cluster config: node name is empty (set NODE_NAME from spec.nodeName)")
	}
	return &KubeNodeLabeler{
		Server:   "https://" + net.JoinHostPort(host, port),
		Token:    strings.TrimSpace(string(token)),
		CAPEM:    ca,
		NodeName: nodeName,
	}, nil
}

// SetTEELabels sets sealpod.io/tee.<tee>=true for each of tees and removes the label of every
// other known TEE (and the single-valued sealpod.io/tee of earlier installers) in one JSON merge
// patch.
func (k *KubeNodeLabeler) SetTEELabels(ctx context.Context, tees []TEE) error {
	labels, err := teeLabelPatch(tees)
	if err != nil {
		return fmt.Errorf("label node %s: %w", k.NodeName, err)
	}
	return k.patchLabels(ctx, labels)
}

// teeLabelPatch is the metadata.labels of the merge patch SetTEELabels sends: "true" for the
// TEEs given, null (remove) for the other known TEEs and LegacyTEELabel.
func teeLabelPatch(tees []TEE) (map[string]any, error) {
	labels := map[string]any{LegacyTEELabel: nil}
	for _, t := range tee.Known {
		labels[TEELabel(t)] = nil
	}
	for _, t := range tees {
		if _, err := ParseTEE(string(t)); err != nil {
			return nil, err
		}
		labels[TEELabel(t)] = "true"
	}
	return labels, nil
}

func (k *KubeNodeLabeler) patchLabels(ctx context.Context, labels map[string]any) error {
	if k.NodeName == "" || k.Server == "" {
		return errors.New("label node: server and node name are required")
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return err
	}
	client, err := k.httpClient()
	if err != nil {
		return fmt.Errorf("label node %s: %w", k.NodeName, err)
	}
	u := strings.TrimRight(k.Server, "/") + "/api/v1/nodes/" + url.PathEscape(k.NodeName)
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("label node %s: %w", k.NodeName, err)
	}
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+k.Token)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("label node %s: %w", k.NodeName, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("label node %s: PATCH %s: %s: %s", k.NodeName, u, resp.Status, printable(strings.TrimSpace(string(msg))))
	}
	return nil
}

// httpClient returns k.Client or one that trusts only CAPEM.
func (k *KubeNodeLabeler) httpClient() (*http.Client, error) {
	if k.Client != nil {
		return k.Client, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(k.CAPEM) {
		return nil, errors.New("no CA certificate in the service-account CA bundle")
	}
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}, nil
}
