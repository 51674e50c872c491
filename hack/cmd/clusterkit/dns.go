package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/internal/atomicfile"
)

// CoreDNSUser is the API user CoreDNS authenticates as (the CN of the pki command's coredns
// client certificate); the dns manifest binds it to the system:coredns ClusterRole.
const CoreDNSUser = "system:coredns"

type dnsFlags struct {
	dir, kubeconfig, serviceIP, serviceCIDR, listen, domain, upstream, ready string
}

// NewDNSCmd writes the cluster DNS set-up (docs/cluster.md, "Cluster DNS"): a Corefile for a
// CoreDNS host process (the kubernetes plugin reading the API server with the pki command's
// coredns kubeconfig, everything else forwarded to the host's resolvers) and the manifest that
// makes it the cluster's DNS as kubeadm's add-on would: the system:coredns ClusterRole and its
// binding, the kube-dns Service at a fixed cluster IP, and — the Service having no selector,
// CoreDNS being no pod — an EndpointSlice that points the Service at the host address
// CoreDNS listens on, so kube-proxy routes the cluster IP there.
func NewDNSCmd() *cobra.Command {
	f := &dnsFlags{}
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Write CoreDNS's Corefile and the kube-dns Service manifest",
		Example: `  clusterkit dns --dir out/cluster/coredns --kubeconfig out/cluster/pki/coredns.kubeconfig \
      --service-ip 10.96.0.10 --service-cidr 10.96.0.0/24 --listen 10.244.0.1`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			corefile, manifest, err := clusterDNS(f)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(f.dir, 0o755); err != nil {
				return fmt.Errorf("dns dir %s: %w", f.dir, err)
			}
			if err := atomicfile.Write(filepath.Join(f.dir, "Corefile"), corefile, 0o644); err != nil {
				return err
			}
			return atomicfile.Write(filepath.Join(f.dir, "kube-dns.yaml"), manifest, 0o644)
		},
	}
	cmd.Flags().StringVar(&f.dir, "dir", "", "output directory: Corefile and kube-dns.yaml")
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "absolute path of CoreDNS's kubeconfig (pki: coredns.kubeconfig)")
	cmd.Flags().StringVar(&f.serviceIP, "service-ip", "10.96.0.10", "the kube-dns Service's cluster IP (the kubelet's clusterDNS)")
	cmd.Flags().StringVar(&f.serviceCIDR, "service-cidr", "10.96.0.0/24", "the apiserver's --service-cluster-ip-range (the service IP must be in it)")
	cmd.Flags().StringVar(&f.listen, "listen", "", "host address CoreDNS binds (port 53), reachable from pods: the bridge gateway")
	cmd.Flags().StringVar(&f.domain, "domain", "cluster.local", "cluster domain (the kubelet's clusterDomain)")
	cmd.Flags().StringVar(&f.upstream, "upstream", "/etc/resolv.conf", "resolv.conf whose nameservers get every other name")
	cmd.Flags().StringVar(&f.ready, "ready", "127.0.0.1:8181", "address of CoreDNS's /ready endpoint")
	for _, r := range []string{"dir", "kubeconfig", "listen"} {
		_ = cmd.MarkFlagRequired(r)
	}
	return cmd
}

var (
	domainRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)
	// corefilePathRe: a path written into the Corefile as one bare token.
	corefilePathRe = regexp.MustCompile(`^/[A-Za-z0-9._/+-]*$`)
)

// clusterDNS renders the Corefile and the manifest for f.
func clusterDNS(f *dnsFlags) (corefile, manifest []byte, err error) {
	svc, err := netip.ParseAddr(f.serviceIP)
	if err != nil || !svc.Is4() {
		return nil, nil, fmt.Errorf("--service-ip %q: not an IPv4 address", f.serviceIP)
	}
	cidr, err := netip.ParsePrefix(f.serviceCIDR)
	if err != nil || !cidr.Contains(svc) || svc == cidr.Masked().Addr() {
		return nil, nil, fmt.Errorf("--service-ip %s: not a service address in --service-cidr %q", svc, f.serviceCIDR)
	}
	listen, err := netip.ParseAddr(f.listen)
	if err != nil || !listen.Is4() || listen.IsLoopback() || listen.IsUnspecified() || listen.IsLinkLocalUnicast() {
		return nil, nil, fmt.Errorf("--listen %q: not an IPv4 address pods reach (loopback, link-local and 0.0.0.0 are not)", f.listen)
	}
	if cidr.Contains(listen) {
		return nil, nil, fmt.Errorf("--listen %s: inside the service range %s", listen, cidr)
	}
	if len(f.domain) > 253 || !domainRe.MatchString(f.domain) {
		return nil, nil, fmt.Errorf("--domain %q: not a lowercase DNS name", f.domain)
	}
	for flag, p := range map[string]string{"--kubeconfig": f.kubeconfig, "--upstream": f.upstream} {
		if !corefilePathRe.MatchString(p) {
			return nil, nil, fmt.Errorf("%s %q: want an absolute path of [A-Za-z0-9._/+-]", flag, p)
		}
	}
	if _, err := netip.ParseAddrPort(f.ready); err != nil {
		return nil, nil, fmt.Errorf("--ready %q: want IP:port", f.ready)
	}
	corefile = fmt.Appendf(nil, `# CoreDNS of the local cluster (hack/cmd/clusterkit dns; docs/cluster.md, "Cluster DNS")
.:53 {
    bind %s
    errors
    ready %s
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s sealpod-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . %s
    cache 30
    loop
    reload
    loadbalance
}
`, listen, f.ready, f.domain, f.kubeconfig, f.upstream)
	manifest, err = dnsManifest(svc, listen)
	return corefile, manifest, err
}

// dnsManifest: kubeadm's CoreDNS RBAC (bound to a user, CoreDNS runs on the host), the kube-dns
// Service without selector and its EndpointSlice to the host.
func dnsManifest(svc, listen netip.Addr) ([]byte, error) {
	labels := map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
	role := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:coredns"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: CoreDNSUser}},
	}
	type port struct {
		name  string
		proto corev1.Protocol
	}
	ports := []port{{"dns", corev1.ProtocolUDP}, {"dns-tcp", corev1.ProtocolTCP}}
	service := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: labels},
		Spec:       corev1.ServiceSpec{ClusterIP: svc.String(), Type: corev1.ServiceTypeClusterIP},
	}
	slice := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-host", Namespace: "kube-system", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns",
			// not the EndpointSlice controller's: it leaves the slice alone
			discoveryv1.LabelManagedBy: "sealpod-cluster",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{listen.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}
	for _, p := range ports {
		service.Spec.Ports = append(service.Spec.Ports, corev1.ServicePort{Name: p.name, Protocol: p.proto, Port: 53, TargetPort: intstr.FromInt32(53)})
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr(p.name), Protocol: ptr(p.proto), Port: ptr(int32(53))})
	}
	var out bytes.Buffer
	out.WriteString("# The local cluster's DNS (hack/cmd/clusterkit dns): CoreDNS runs on the host.\n")
	for i, o := range []any{role, binding, service, slice} {
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

func ptr[T any](v T) *T { return &v }
