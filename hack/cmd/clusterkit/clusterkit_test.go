package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	if err := writePKI(&pkiFlags{dir: dir, node: "localhost", server: "https://10.244.0.1:6443", ips: []string{"127.0.0.1", "10.244.0.1"}}); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, "ca.crt")))
	for _, tc := range []struct {
		name, cn, org string
		usage         x509.ExtKeyUsage
		host          string
	}{
		{"apiserver", "kube-apiserver", "", x509.ExtKeyUsageServerAuth, "10.244.0.1"},
		{"apiserver", "kube-apiserver", "", x509.ExtKeyUsageServerAuth, "kubernetes.default.svc"},
		{"kubelet", "system:node:localhost", "system:nodes", x509.ExtKeyUsageServerAuth, "localhost"},
		{"kubelet", "system:node:localhost", "system:nodes", x509.ExtKeyUsageClientAuth, ""},
		{"admin", "admin", "system:masters", x509.ExtKeyUsageClientAuth, ""},
		{"scheduler", "system:kube-scheduler", "", x509.ExtKeyUsageClientAuth, ""},
		{"kube-proxy", "system:kube-proxy", "", x509.ExtKeyUsageClientAuth, ""},
		{"coredns", CoreDNSUser, "", x509.ExtKeyUsageClientAuth, ""},
	} {
		t.Run(tc.name+"/"+tc.host, func(t *testing.T) {
			c := readCert(t, filepath.Join(dir, tc.name+".crt"))
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Fatal(err)
			}
			if c.Subject.CommonName != tc.cn || (tc.org != "" && !slices.Contains(c.Subject.Organization, tc.org)) {
				t.Fatalf("subject %v", c.Subject)
			}
		})
	}
	// A client certificate is not a serving certificate.
	if _, err := readCert(t, filepath.Join(dir, "admin.crt")).Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("admin certificate verifies as a server")
	}
	if _, err := os.Stat(filepath.Join(dir, "coredns.kubeconfig")); err != nil {
		t.Fatalf("CoreDNS kubeconfig: %v", err)
	}
	kc, err := os.ReadFile(filepath.Join(dir, "kubelet.kubeconfig"))
	if err != nil || !strings.Contains(string(kc), `"https://10.244.0.1:6443"`) || !strings.Contains(string(kc), filepath.Join(dir, "kubelet.key")) {
		t.Fatalf("kubelet kubeconfig %s %v", kc, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %v %v", fi.Mode(), err)
	}
}

func TestInstallerManifest(t *testing.T) {
	out, err := installerManifest(&manifestFlags{image: "127.0.0.1:5000/i@sha256:00", args: []string{"install", "--wait"},
		env: []string{"KUBERNETES_SERVICE_HOST=10.244.0.1", "NODE_NAME=x"}, relocate: []string{"/etc/containerd=/s/etc/containerd", "/usr/local/bin=/s/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(out, &ds); err != nil {
		t.Fatal(err)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if c.Image != "127.0.0.1:5000/i@sha256:00" || !slices.Equal(c.Args, []string{"install", "--wait"}) {
		t.Fatalf("image %s args %v", c.Image, c.Args)
	}
	env := map[string]int{}
	for _, e := range c.Env {
		env[e.Name]++
		if e.Name == "NODE_NAME" && (e.Value != "x" || e.ValueFrom != nil) {
			t.Fatalf("NODE_NAME not replaced: %+v", e)
		}
	}
	if env["NODE_NAME"] != 1 || env["KUBERNETES_SERVICE_HOST"] != 1 {
		t.Fatalf("env %v", c.Env)
	}
	paths := map[string]bool{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.HostPath != nil {
			paths[v.HostPath.Path] = true
		}
	}
	for p, want := range map[string]bool{"/s/etc/containerd": true, "/s/bin": true, "/etc/containerd": false, "/usr/local/bin": false, "/etc/sealpod": true} {
		if paths[p] != want {
			t.Errorf("hostPath %s present=%v, want %v", p, paths[p], want)
		}
	}
	for _, bad := range []manifestFlags{
		{image: "i", relocate: []string{"/nope=/x"}},
		{image: "i", relocate: []string{"relative=/x"}},
		{image: "i", env: []string{"NOVALUE"}},
	} {
		if _, err := installerManifest(&bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestForward(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				l, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "echo %s", l)
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- forward(ctx, addr, echo.Addr().String()) }()
	var c net.Conn
	for i := 0; i < 50; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "hello\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || got != "echo hello\n" {
		t.Fatalf("through the forwarder: %q %v", got, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
