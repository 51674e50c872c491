package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// RuntimeClassGetter looks up a RuntimeClass's handler (readiness check).
type RuntimeClassGetter interface {
	// RuntimeClassHandler returns the handler of the named RuntimeClass; found is false when
	// the API says it does not exist.
	RuntimeClassHandler(ctx context.Context, name string) (handler string, found bool, err error)
}

// RuntimeClassHandler reads a RuntimeClass through the same in-cluster API the labeler uses
// (GET /apis/node.k8s.io/v1/runtimeclasses/<name>; deploy/rbac.yaml grants `get`).
func (k *KubeNodeLabeler) RuntimeClassHandler(ctx context.Context, name string) (string, bool, error) {
	if k.Server == "" {
		return "", false, errors.New("get runtimeclass: no API server")
	}
	client, err := k.httpClient()
	if err != nil {
		return "", false, fmt.Errorf("get runtimeclass %s: %w", name, err)
	}
	u := strings.TrimRight(k.Server, "/") + "/apis/node.k8s.io/v1/runtimeclasses/" + url.PathEscape(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", false, fmt.Errorf("get runtimeclass %s: %w", name, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+k.Token)
	resp, err := client.Do(req)
	if err != nil {
		return "", false, fmt.Errorf("get runtimeclass %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", false, fmt.Errorf("get runtimeclass %s: %w", name, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "", false, nil
	case resp.StatusCode/100 != 2:
		return "", false, fmt.Errorf("get runtimeclass %s: GET %s: %s: %s", name, u, resp.Status, printable(strings.TrimSpace(string(body))))
	}
	var rc struct {
		Kind    string `json:"kind"`
		Handler string `json:"handler"`
	}
	if err := json.Unmarshal(body, &rc); err != nil || rc.Kind != "RuntimeClass" {
		return "", false, fmt.Errorf("get runtimeclass %s: not a RuntimeClass (kind %q, %v)", name, rc.Kind, err)
	}
	return rc.Handler, true, nil
}
