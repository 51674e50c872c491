package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

func validDNSFlags() *dnsFlags {
	return &dnsFlags{kubeconfig: "/s/pki/coredns.kubeconfig", serviceIP: "10.96.0.10", serviceCIDR: "10.96.0.0/24",
		listen: "10.244.0.1", domain: "cluster.local", upstream: "/etc/resolv.conf", ready: "127.0.0.1:8181"}
}

// TestClusterDNS: the manifest decodes strictly into the four objects; kube-proxy can route the
// Service to CoreDNS (selector-less Service, an EndpointSlice for it whose port names and
// protocols match the Service's, at the address the Corefile binds); the binding names the
// pki command's CoreDNS user; the Corefile serves the cluster domain from the API.
func TestClusterDNS(t *testing.T) {
	corefile, manifest, err := clusterDNS(validDNSFlags())
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(manifest, []byte("\n---\n"))
	if len(docs) != 4 {
		t.Fatalf("%d documents, want 4:\n%s", len(docs), manifest)
	}
	var (
		role    rbacv1.ClusterRole
		binding rbacv1.ClusterRoleBinding
		svc     corev1.Service
		slice   discoveryv1.EndpointSlice
	)
	for i, o := range []any{&role, &binding, &svc, &slice} {
		if err := yaml.UnmarshalStrict(docs[i], o); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, docs[i])
		}
	}
	if svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != "10.96.0.10" || svc.Spec.Selector != nil {
		t.Fatalf("service %+v", svc)
	}
	if slice.Namespace != svc.Namespace || slice.Labels[discoveryv1.LabelServiceName] != svc.Name ||
		slice.Labels[discoveryv1.LabelManagedBy] == "endpointslice-controller.k8s.io" || slice.AddressType != discoveryv1.AddressTypeIPv4 {
		t.Fatalf("endpoint slice %+v", slice)
	}
	if len(slice.Endpoints) != 1 || !slices.Equal(slice.Endpoints[0].Addresses, []string{"10.244.0.1"}) ||
		slice.Endpoints[0].Conditions.Ready == nil || !*slice.Endpoints[0].Conditions.Ready {
		t.Fatalf("endpoints %+v", slice.Endpoints)
	}
	if len(svc.Spec.Ports) != 2 || len(slice.Ports) != len(svc.Spec.Ports) {
		t.Fatalf("ports: service %+v slice %+v", svc.Spec.Ports, slice.Ports)
	}
	for i, p := range svc.Spec.Ports {
		sp := slice.Ports[i]
		if p.Port != 53 || sp.Name == nil || *sp.Name != p.Name || sp.Protocol == nil || *sp.Protocol != p.Protocol || sp.Port == nil || *sp.Port != 53 {
			t.Fatalf("service port %+v, slice port %+v", p, sp)
		}
	}
	if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "User" || binding.Subjects[0].Name != CoreDNSUser {
		t.Fatalf("binding %+v", binding)
	}
	canList := func(group, res string) bool {
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, res) && slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "watch") {
				return true
			}
		}
		return false
	}
	for _, r := range [][2]string{{"", "services"}, {"", "namespaces"}, {"", "pods"}, {"discovery.k8s.io", "endpointslices"}} {
		if !canList(r[0], r[1]) {
			t.Errorf("system:coredns cannot list/watch %v", r)
		}
	}
	for _, want := range []string{"bind 10.244.0.1\n", "kubernetes cluster.local in-addr.arpa ip6.arpa {", "kubeconfig /s/pki/coredns.kubeconfig sealpod-local\n",
		"forward . /etc/resolv.conf\n", "ready 127.0.0.1:8181\n"} {
		if !strings.Contains(string(corefile), want) {
			t.Errorf("Corefile lacks %q:\n%s", want, corefile)
		}
	}
}

func TestClusterDNSRefuses(t *testing.T) {
	cases := map[string]func(f *dnsFlags){
		"service ip outside cidr":    func(f *dnsFlags) { f.serviceIP = "10.97.0.10" },
		"service ip network address": func(f *dnsFlags) { f.serviceIP = "10.96.0.0" },
		"service ip not ip":          func(f *dnsFlags) { f.serviceIP = "kube-dns" },
		"bad cidr":                   func(f *dnsFlags) { f.serviceCIDR = "10.96.0.0" },
		"listen loopback":            func(f *dnsFlags) { f.listen = "127.0.0.1" },
		"listen any":                 func(f *dnsFlags) { f.listen = "0.0.0.0" },
		"listen in service range":    func(f *dnsFlags) { f.listen = "10.96.0.53" },
		"domain uppercase":           func(f *dnsFlags) { f.domain = "Cluster.Local" },
		"domain injection":           func(f *dnsFlags) { f.domain = "cluster.local {\n}" },
		"kubeconfig relative":        func(f *dnsFlags) { f.kubeconfig = "pki/coredns.kubeconfig" },
		"kubeconfig with space":      func(f *dnsFlags) { f.kubeconfig = "/my cluster/coredns.kubeconfig" },
		"upstream with brace":        func(f *dnsFlags) { f.upstream = "/etc/resolv.conf}" },
		"ready without port":         func(f *dnsFlags) { f.ready = "127.0.0.1" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			f := validDNSFlags()
			mutate(f)
			if _, _, err := clusterDNS(f); err == nil {
				t.Fatalf("%+v accepted", f)
			}
		})
	}
}
