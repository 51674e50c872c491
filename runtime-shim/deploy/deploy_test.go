package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/runtime-shim/installer"
	"github.com/sealpod/sealpod/runtime-shim/installer/cli"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

type objects struct {
	namespaces      []corev1.Namespace
	serviceAccounts []corev1.ServiceAccount
	clusterRoles    []rbacv1.ClusterRole
	bindings        []rbacv1.ClusterRoleBinding
	daemonSets      map[string]appsv1.DaemonSet
	runtimeClasses  []nodev1.RuntimeClass
}

// decodeAll parses every document of every manifest strictly (unknown or misspelled fields fail)
// into its k8s.io/api type.
func decodeAll(t *testing.T) objects {
	t.Helper()
	o := objects{daemonSets: map[string]appsv1.DaemonSet{}}
	files, err := fs.Glob(Manifests, "*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	for _, f := range InstallOrder {
		if !slices.Contains(files, f) {
			t.Fatalf("InstallOrder names missing %s", f)
		}
	}
	for _, f := range files {
		data, _ := Manifests.ReadFile(f)
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				t.Fatalf("%s: empty document %d", f, i)
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s doc %d: %v", f, i, err)
			}
			where := fmt.Sprintf("%s doc %d (%s)", f, i, tm.Kind)
			strict := func(into any) {
				if err := yaml.UnmarshalStrict(doc, into); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			switch tm.APIVersion + "/" + tm.Kind {
			case "v1/Namespace":
				var x corev1.Namespace
				strict(&x)
				o.namespaces = append(o.namespaces, x)
			case "v1/ServiceAccount":
				var x corev1.ServiceAccount
				strict(&x)
				o.serviceAccounts = append(o.serviceAccounts, x)
			case "rbac.authorization.k8s.io/v1/ClusterRole":
				var x rbacv1.ClusterRole
				strict(&x)
				o.clusterRoles = append(o.clusterRoles, x)
			case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
				var x rbacv1.ClusterRoleBinding
				strict(&x)
				o.bindings = append(o.bindings, x)
			case "apps/v1/DaemonSet":
				var x appsv1.DaemonSet
				strict(&x)
				o.daemonSets[x.Name] = x
			case "node.k8s.io/v1/RuntimeClass":
				var x nodev1.RuntimeClass
				strict(&x)
				o.runtimeClasses = append(o.runtimeClasses, x)
			default:
				t.Fatalf("%s: unexpected kind %s/%s", where, tm.APIVersion, tm.Kind)
			}
		}
	}
	return o
}

func TestRuntimeClasses(t *testing.T) {
	o := decodeAll(t)
	want := map[string]bool{"sealpod-snp": true, "sealpod-tdx": true, "sealpod-pef": true, "sealpod-sim": true, "sealpod-sim-tdx": true}
	if len(o.runtimeClasses) != len(want) {
		t.Fatalf("%d RuntimeClasses, want %d", len(o.runtimeClasses), len(want))
	}
	for _, rc := range o.runtimeClasses {
		if !want[rc.Name] {
			t.Fatalf("unexpected RuntimeClass %s", rc.Name)
		}
		delete(want, rc.Name)
		if rc.Handler != installer.HandlerName {
			t.Errorf("%s: handler %q, want %q", rc.Name, rc.Handler, installer.HandlerName)
		}
		tee := strings.TrimPrefix(rc.Name, "sealpod-")
		if _, err := installer.ParseTEE(tee); err != nil {
			t.Errorf("%s: %v", rc.Name, err)
		}
		// One label per TEE (a node offering several TEEs matches each of their RuntimeClasses).
		if key := installer.TEELabel(installer.TEE(tee)); rc.Scheduling == nil || len(rc.Scheduling.NodeSelector) != 1 || rc.Scheduling.NodeSelector[key] != "true" {
			t.Errorf("%s: scheduling %+v, want nodeSelector %s=true", rc.Name, rc.Scheduling, key)
		}
		if rc.Overhead == nil {
			t.Fatalf("%s: no overhead", rc.Name)
		}
		mem, cpu := rc.Overhead.PodFixed[corev1.ResourceMemory], rc.Overhead.PodFixed[corev1.ResourceCPU]
		if mem.Cmp(resource.MustParse("600Mi")) != 0 || cpu.Cmp(resource.MustParse("250m")) != 0 || len(rc.Overhead.PodFixed) != 2 {
			t.Errorf("%s: overhead %v", rc.Name, rc.Overhead.PodFixed)
		}
	}
}

func TestRBAC(t *testing.T) {
	o := decodeAll(t)
	if len(o.namespaces) != 1 || o.namespaces[0].Name != "sealpod-system" {
		t.Fatalf("namespaces %v", o.namespaces)
	}
	if len(o.serviceAccounts) != 1 || len(o.clusterRoles) != 1 || len(o.bindings) != 1 {
		t.Fatalf("want one ServiceAccount, ClusterRole, ClusterRoleBinding")
	}
	sa, role, b := o.serviceAccounts[0], o.clusterRoles[0], o.bindings[0]
	if sa.Namespace != "sealpod-system" {
		t.Errorf("ServiceAccount namespace %q", sa.Namespace)
	}
	canPatchNodes, canGetRuntimeClasses := false, false
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, "") && slices.Contains(r.Resources, "nodes") && slices.Contains(r.Verbs, "patch") {
			canPatchNodes = true
		}
		if slices.Contains(r.APIGroups, "node.k8s.io") && slices.Contains(r.Resources, "runtimeclasses") && slices.Contains(r.Verbs, "get") {
			canGetRuntimeClasses = true
		}
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.Resources, "secrets") {
			t.Errorf("ClusterRole grants more than it needs: %+v", r)
		}
	}
	if !canPatchNodes {
		t.Errorf("ClusterRole cannot patch nodes: %+v", role.Rules)
	}
	if !canGetRuntimeClasses {
		t.Errorf("ClusterRole cannot get runtimeclasses (readiness check): %+v", role.Rules)
	}
	if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != role.Name || len(b.Subjects) != 1 ||
		b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa.Name || b.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("binding %+v does not bind %s to %s", b, role.Name, sa.Name)
	}
	for name, ds := range o.daemonSets {
		if ds.Spec.Template.Spec.ServiceAccountName != sa.Name || ds.Namespace != sa.Namespace {
			t.Errorf("DaemonSet %s runs as %s/%s", name, ds.Namespace, ds.Spec.Template.Spec.ServiceAccountName)
		}
	}
}

func TestDaemonSets(t *testing.T) {
	o := decodeAll(t)
	for _, tc := range []struct {
		name, subcommand string
	}{
		{"sealpod-node-installer", "install"},
		{"sealpod-node-cleanup", "uninstall"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds, ok := o.daemonSets[tc.name]
			if !ok {
				t.Fatalf("DaemonSet %s missing", tc.name)
			}
			sel, labels := ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels
			for k, v := range sel {
				if labels[k] != v {
					t.Fatalf("selector %v does not match template labels %v", sel, labels)
				}
			}
			spec := ds.Spec.Template.Spec
			if !spec.HostPID {
				t.Error("hostPID is needed to restart containerd through the host's systemd")
			}
			if len(spec.Containers) != 1 {
				t.Fatalf("%d containers", len(spec.Containers))
			}
			c := spec.Containers[0]
			if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
				t.Error("installer must be privileged")
			}
			nodeName := false
			for _, e := range c.Env {
				if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
					nodeName = true
				}
			}
			if !nodeName {
				t.Error("NODE_NAME from spec.nodeName missing (the installer labels that node)")
			}
			// Every host path is mounted at /host/<path>, and the ones the installer needs exist.
			vols := map[string]corev1.Volume{}
			for _, v := range spec.Volumes {
				vols[v.Name] = v
			}
			mounted := map[string]bool{}
			for _, m := range c.VolumeMounts {
				v, ok := vols[m.Name]
				if !ok {
					t.Fatalf("mount %s has no volume", m.Name)
				}
				if v.Secret != nil {
					if v.Secret.Optional == nil || !*v.Secret.Optional || !m.ReadOnly || !strings.HasPrefix(m.MountPath, "/var/run/sealpod/") {
						t.Errorf("secret volume %s: must be optional, read-only, under /var/run/sealpod", m.Name)
					}
					continue
				}
				if v.HostPath == nil {
					t.Fatalf("mount %s is neither hostPath nor secret", m.Name)
				}
				if m.MountPath != path.Join("/host", v.HostPath.Path) {
					t.Errorf("hostPath %s mounted at %s, want /host%s", v.HostPath.Path, m.MountPath, v.HostPath.Path)
				}
				mounted[v.HostPath.Path] = true
			}
			need := []string{"/etc/containerd", "/etc/sealpod", "/usr/local/bin", "/run/containerd", "/run/systemd", "/sys"}
			if tc.subcommand == "install" { // the readiness check: /dev/kvm, CPUID, the QGS socket
				need = append(need, "/dev", path.Dir(installer.DefaultQGSSocket))
			}
			for _, p := range need {
				if !mounted[p] {
					t.Errorf("host path %s not mounted", p)
				}
			}
			// The container's arguments are accepted by the real command-line parser.
			if len(c.Command) != 1 || path.Base(c.Command[0]) != "sealpod-node-installer" {
				t.Fatalf("command %v", c.Command)
			}
			if len(c.Args) == 0 || c.Args[0] != tc.subcommand {
				t.Fatalf("args %v, want subcommand %s", c.Args, tc.subcommand)
			}
			root := cli.NewRootCmd()
			sub, rest, err := root.Find(c.Args)
			if err != nil || sub.Name() != tc.subcommand {
				t.Fatalf("args %v: %v", c.Args, err)
			}
			if err := sub.ParseFlags(rest); err != nil {
				t.Fatalf("args %v rejected: %v", c.Args, err)
			}
			if hr, _ := sub.Flags().GetString("host-root"); hr != "/host" {
				t.Errorf("--host-root %q, want /host", hr)
			}
			if w, _ := sub.Flags().GetBool("wait"); !w {
				t.Error("--wait missing: the DaemonSet would restart the pod in a loop")
			}
			if tc.subcommand == "install" {
				shim, _ := sub.Flags().GetString("shim")
				if path.Base(shim) != installer.ShimBinaryName {
					t.Errorf("--shim %q", shim)
				}
			}
		})
	}
}

// TestStrictDecodingCatchesTypos shows the decoding above rejects a misspelled field.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	doc := []byte("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: x}\nhandlr: sealpod\n")
	var rc nodev1.RuntimeClass
	if err := yaml.UnmarshalStrict(doc, &rc); err == nil {
		t.Fatal("misspelled field accepted")
	}
}
