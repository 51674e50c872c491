package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"

	"github.com/spf13/cobra"
)

type pkiFlags struct {
	dir, node, server string
	ips               []string
}

// NewPKICmd writes the cluster's throwaway PKI: a CA, the apiserver serving certificate, client
// certificates for admin, kubelet, controller-manager, scheduler, kube-proxy, CoreDNS and apiserver→kubelet, the
// service-account signing key, and one kubeconfig per client.
func NewPKICmd() *cobra.Command {
	f := &pkiFlags{}
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Write the cluster CA, certificates, service-account key and kubeconfigs",
		Example: `  clusterkit pki --dir out/cluster/pki --node localhost --server https://127.0.0.1:6443 \
      --ip 127.0.0.1 --ip 10.96.0.1`,
		RunE: func(cmd *cobra.Command, _ []string) error { return writePKI(f) },
	}
	cmd.Flags().StringVar(&f.dir, "dir", "", "output directory (created; existing files are overwritten)")
	cmd.Flags().StringVar(&f.node, "node", "localhost", "node name (the kubelet's client certificate is system:node:<node>)")
	cmd.Flags().StringVar(&f.server, "server", "https://127.0.0.1:6443", "API server URL written into the kubeconfigs")
	cmd.Flags().StringSliceVar(&f.ips, "ip", []string{"127.0.0.1"}, "IP SANs of the apiserver certificate (repeatable)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

type cert struct {
	name, cn string
	orgs     []string
	server   bool
}

func writePKI(f *pkiFlags) error {
	abs, err := filepath.Abs(f.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("pki dir %s: %w", abs, err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "sealpod-local-cluster-ca"},
		NotBefore: now, NotAfter: now.AddDate(1, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("ca certificate: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	if err := writeCertKey(abs, "ca", caDER, caKey); err != nil {
		return err
	}
	certs := []cert{
		{name: "apiserver", cn: "kube-apiserver", server: true},
		{name: "admin", cn: "admin", orgs: []string{"system:masters"}},
		{name: "kubelet", cn: "system:node:" + f.node, orgs: []string{"system:nodes"}, server: true},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
		{name: "kube-proxy", cn: "system:kube-proxy"}, // bound to system:node-proxier by default
		{name: "coredns", cn: CoreDNSUser},            // bound to system:coredns by the dns manifest
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
	}
	for _, c := range certs {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		t := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: c.cn, Organization: c.orgs},
			NotBefore: now, NotAfter: now.AddDate(1, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if c.server {
			t.ExtKeyUsage = append(t.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
			t.DNSNames = []string{"localhost"}
			if f.node != "localhost" {
				t.DNSNames = append(t.DNSNames, f.node)
			}
			if c.name == "apiserver" {
				t.DNSNames = append(t.DNSNames, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
			}
			for _, s := range f.ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return fmt.Errorf("--ip %q: not an IP address", s)
				}
				t.IPAddresses = append(t.IPAddresses, ip)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, caCert, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", c.name, err)
		}
		if err := writeCertKey(abs, c.name, der, key); err != nil {
			return err
		}
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(abs, "sa.key"), saKey); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(abs, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return err
	}
	for _, user := range []string{"admin", "kubelet", "controller-manager", "scheduler", "kube-proxy", "coredns"} {
		kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: sealpod-local
  cluster: {server: %q, certificate-authority: %q}
users:
- name: %s
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: sealpod-local
  context: {cluster: sealpod-local, user: %s}
current-context: sealpod-local
`, f.server, filepath.Join(abs, "ca.crt"), user, filepath.Join(abs, user+".crt"), filepath.Join(abs, user+".key"), user)
		if err := atomicfile.Write(filepath.Join(abs, user+".kubeconfig"), []byte(kc), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func writeCertKey(dir, name string, der []byte, key crypto.Signer) error {
	if err := atomicfile.Write(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, name+".key"), key)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("key %s: %w", path, err)
	}
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}
