package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// realWorld prints what the realworld mode reports (see the package comment).
func realWorld(dir string) {
	hook := "not run"
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(dir + "/poststart"); err == nil {
			hook = "ran"
			break
		}
	}
	fmt.Println("poststart hook: " + hook)

	if v, ok := os.LookupEnv("RUNTIME_SECRET"); ok {
		fmt.Printf("runtime secret: sha256:%x\n", sha256.Sum256([]byte(v)))
	} else {
		fmt.Println("runtime secret: absent")
	}

	// The kubelet's atomic writer keeps "..data" and "..<timestamp>" in every such volume,
	// even empty: only other names are keys.
	var keys []string
	ents, _ := os.ReadDir("/etc/optional")
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "..") {
			keys = append(keys, e.Name())
		}
	}
	if len(keys) == 0 {
		fmt.Println("optional config: absent")
	} else {
		fmt.Println("optional config: present: " + strings.Join(keys, ","))
	}

	user, err := selfSubject()
	if err != nil {
		fmt.Println("api error: " + err.Error())
		return
	}
	fmt.Println("api user: " + user)
}

// selfSubject asks the API server who the pod's service-account token is, as in-cluster
// clients do (client-go's InClusterConfig: the token, the CA and the service variables).
func selfSubject() (string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", errors.New("KUBERNETES_SERVICE_HOST/PORT not set")
	}
	token, err := os.ReadFile(serviceAccountDir + "/token")
	if err != nil {
		return "", err
	}
	ca, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return "", errors.New("ca.crt: no certificate")
	}
	client := &http.Client{Timeout: 20 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	req, err := http.NewRequest(http.MethodPost, "https://"+net.JoinHostPort(host, port)+"/apis/authentication.k8s.io/v1/selfsubjectreviews", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	var r struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}
