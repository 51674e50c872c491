package manifests

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	policyv1beta1 "k8s.io/api/policy/v1beta1"
	storagev1 "k8s.io/api/storage/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Issue #15 item 1: every PVC-backed volume (persistentVolumeClaim, volumeClaimTemplates,
// ephemeral) is a sealed encrypted volume; the claims stay in the output for the kubelet.

// pvc is a PersistentVolumeClaim in namespace prod.
func pvc(name, extra string) string {
	return "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: " + name + ", namespace: prod}\nspec:\n  accessModes: [ReadWriteOnce]\n" + extra + "---\n"
}

const storage1Gi = "  resources: {requests: {storage: 1Gi}}\n"

// statefulSet is a StatefulSet prod/db with the given claim templates (YAML list items
// indented by two) and pod spec.
func statefulSet(templates, podSpec string) string {
	return "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: prod}\nspec:\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n" +
		"  template:\n    metadata: {labels: {app: db}}\n    spec:\n" + podSpec + "  volumeClaimTemplates:\n" + templates
}

func claimTemplate(name, spec string) string {
	return "  - metadata: {name: " + name + "}\n    spec: {accessModes: [ReadWriteOnce]" + spec + "}\n"
}

// sealedVolume returns the sealed volume of that name of the first workload.
func sealedVolume(t *testing.T, res *Result, name string) spec.Volume {
	t.Helper()
	for _, v := range res.Workloads[0].Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no sealed volume %q in %+v", name, res.Workloads[0].Spec.Volumes)
	return spec.Volume{}
}

// outputPodSpec strictly decodes the output and returns the pod template of the object of
// that kind and name, with its annotation AnnotationVolumes parsed.
func outputPodSpec(t *testing.T, out, kind, name string) (*corev1.PodTemplateSpec, map[string]spec.PlaceholderVolume) {
	t.Helper()
	for _, obj := range strictDecodeOutput(t, out) {
		var tmpl *corev1.PodTemplateSpec
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			if kind == "StatefulSet" && o.Name == name {
				tmpl = &o.Spec.Template
			}
		case *appsv1.Deployment:
			if kind == "Deployment" && o.Name == name {
				tmpl = &o.Spec.Template
			}
		case *corev1.Pod:
			if kind == "Pod" && o.Name == name {
				tmpl = &corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}
			}
		}
		if tmpl == nil {
			continue
		}
		ann, ok := tmpl.Annotations[spec.AnnotationVolumes]
		if !ok {
			return tmpl, nil
		}
		vols, err := spec.ParsePlaceholderVolumes(ann)
		if err != nil {
			t.Fatalf("%s %s: %v", kind, name, err)
		}
		return tmpl, vols
	}
	t.Fatalf("no %s %s in the output:\n%s", kind, name, out)
	return nil, nil
}

// strictDecodeOutput decodes every document of the sealed manifests into its k8s.io/api type,
// refusing unknown fields.
func strictDecodeOutput(t *testing.T, out string) []any {
	t.Helper()
	var objs []any
	for i, doc := range strings.Split(out, "\n---\n") {
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := sigsyaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("output document %d: %v", i, err)
		}
		var o any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Pod":
			o = &corev1.Pod{}
		case "v1 PersistentVolumeClaim":
			o = &corev1.PersistentVolumeClaim{}
		case "v1 Service":
			o = &corev1.Service{}
		case "v1 ConfigMap":
			o = &corev1.ConfigMap{}
		case "v1 Secret":
			o = &corev1.Secret{}
		case "apps/v1 StatefulSet":
			o = &appsv1.StatefulSet{}
		case "apps/v1 Deployment":
			o = &appsv1.Deployment{}
		case "batch/v1 Job":
			o = &batchv1.Job{}
		case "batch/v1 CronJob":
			o = &batchv1.CronJob{}
		case "v1 ReplicationController":
			o = &corev1.ReplicationController{}
		case "apps/v1 DaemonSet":
			o = &appsv1.DaemonSet{}
		case "apps/v1 ReplicaSet":
			o = &appsv1.ReplicaSet{}
		case "policy/v1 PodDisruptionBudget":
			o = &policyv1.PodDisruptionBudget{}
		case "policy/v1beta1 PodDisruptionBudget":
			o = &policyv1beta1.PodDisruptionBudget{}
		case "storage.k8s.io/v1 StorageClass": // cassandra's
			o = &storagev1.StorageClass{}
		default:
			t.Fatalf("output document %d: unexpected %s %s", i, tm.APIVersion, tm.Kind)
		}
		if err := sigsyaml.UnmarshalStrict([]byte(doc), o); err != nil {
			t.Fatalf("output document %d (%s) does not decode strictly: %v\n%s", i, tm.Kind, err, doc)
		}
		objs = append(objs, o)
	}
	return objs
}

// checkPlaceholderVolumes checks that every container of the placeholder that uses an
// encrypted volume mounts (Filesystem) or maps (Block) exactly it at the placeholder path,
// and that the annotation lists every encrypted volume with its mode and size.
func checkPlaceholderVolumes(t *testing.T, res *Result, tmpl *corev1.PodTemplateSpec, ann map[string]spec.PlaceholderVolume) {
	t.Helper()
	sp := res.Workloads[0].Spec
	want := map[string]spec.PlaceholderVolume{}
	for _, v := range sp.Volumes {
		if v.Kind == spec.VolumeEncrypted {
			want[v.Name] = spec.PlaceholderVolume{Mode: v.Claim.Mode, SizeBytes: v.Claim.SizeBytes}
		}
	}
	if len(want) == 0 {
		want = nil
	}
	if !reflect.DeepEqual(ann, want) {
		t.Errorf("annotation %s = %v, want %v", spec.AnnotationVolumes, ann, want)
	}
	placeholders := append(append([]corev1.Container(nil), tmpl.Spec.InitContainers...), tmpl.Spec.Containers...)
	for i, sc := range append(append([]spec.Container(nil), sp.InitContainers...), sp.Containers...) {
		pc := placeholders[i]
		wantMounts, wantDevices := map[string]bool{}, map[string]bool{}
		for _, m := range sc.Mounts {
			if want[m.Volume].Mode != "" {
				wantMounts[m.Volume] = true
			}
		}
		for _, d := range sc.Devices {
			wantDevices[d.Volume] = true
		}
		gotMounts, gotDevices := map[string]bool{}, map[string]bool{}
		for _, m := range pc.VolumeMounts {
			if strings.HasPrefix(m.MountPath, spec.PlaceholderVolumeDir) {
				if m.MountPath != spec.PlaceholderVolumePath(m.Name) || m.SubPath != "" || gotMounts[m.Name] {
					t.Errorf("container %s: placeholder mount %+v", pc.Name, m)
				}
				gotMounts[m.Name] = true
			}
		}
		for _, d := range pc.VolumeDevices {
			if d.DevicePath != spec.PlaceholderVolumePath(d.Name) || gotDevices[d.Name] {
				t.Errorf("container %s: placeholder device %+v", pc.Name, d)
			}
			gotDevices[d.Name] = true
		}
		if !reflect.DeepEqual(gotMounts, wantMounts) || !reflect.DeepEqual(gotDevices, wantDevices) {
			t.Errorf("container %s: placeholder mounts %v devices %v, want %v %v", pc.Name, gotMounts, gotDevices, wantMounts, wantDevices)
		}
	}
}

func TestEncryptedVolumes(t *testing.T) {
	ctr := func(mounts string) string {
		return "      containers:\n      - {name: app, image: " + pinned + mounts + "}\n"
	}
	fsMount := ", volumeMounts: [{name: data, mountPath: /var/lib/secret-data-dir}]"
	deploymentPVC := func(claimExtra, volExtra, mounts string) string {
		return pvc("data-pvc", claimExtra) + deployment(ctr(mounts)+"      volumes: [{name: data, persistentVolumeClaim: {claimName: data-pvc"+volExtra+"}}]\n")
	}
	gi := int64(1 << 30)
	tests := []leakCase{
		{
			name:  "Filesystem PVC",
			input: deploymentPVC(storage1Gi, "", fsMount),
			check: func(t *testing.T, res *Result, out string) {
				v := sealedVolume(t, res, "data")
				want := spec.Claim{Namespace: "prod", ClaimName: "data-pvc", Mode: spec.VolumeModeFilesystem, SizeBytes: gi}
				if v.Kind != spec.VolumeEncrypted || v.Claim == nil || *v.Claim != want {
					t.Errorf("sealed volume %+v, claim %+v", v, v.Claim)
				}
				if m := withoutServiceAccount(res.Workloads[0].Spec).Containers[0].Mounts; len(m) != 1 || m[0] != (spec.Mount{Volume: "data", Path: "/var/lib/secret-data-dir"}) {
					t.Errorf("sealed mounts %+v", m)
				}
				notIn(t, out, "/var/lib/secret-data-dir")
				tmpl, ann := outputPodSpec(t, out, "Deployment", "app")
				checkPlaceholderVolumes(t, res, tmpl, ann)
				if vs := tmpl.Spec.Volumes; len(vs) != 1 || vs[0].PersistentVolumeClaim == nil || vs[0].PersistentVolumeClaim.ClaimName != "data-pvc" {
					t.Errorf("placeholder volumes %+v", vs)
				}
				if outputObject(t, out, "PersistentVolumeClaim", "data-pvc") == nil {
					t.Error("the PersistentVolumeClaim left the output")
				}
				warned(t, res, "volumes[0]", "PersistentVolumeClaim prod/data-pvc", "ReadWriteOncePod")
			},
		},
		{
			name:  "Block PVC",
			input: deploymentPVC("  volumeMode: Block\n  resources: {requests: {storage: 2Gi}}\n", "", ", volumeDevices: [{name: data, devicePath: /dev/secret-dev}]"),
			check: func(t *testing.T, res *Result, out string) {
				if c := sealedVolume(t, res, "data").Claim; c == nil || c.Mode != spec.VolumeModeBlock || c.SizeBytes != 2*gi {
					t.Errorf("claim %+v", c)
				}
				if d := res.Workloads[0].Spec.Containers[0].Devices; len(d) != 1 || d[0] != (spec.Device{Volume: "data", Path: "/dev/secret-dev"}) {
					t.Errorf("sealed devices %+v", d)
				}
				notIn(t, out, "/dev/secret-dev")
				tmpl, ann := outputPodSpec(t, out, "Deployment", "app")
				checkPlaceholderVolumes(t, res, tmpl, ann)
				if len(tmpl.Spec.Containers[0].VolumeDevices) != 1 {
					t.Errorf("no placeholder device:\n%s", out)
				}
			},
		},
		{
			name: "StatefulSet with two templates, init container, subPath and readOnly mounts",
			input: statefulSet(claimTemplate("data", ", resources: {requests: {storage: 10Gi}}")+claimTemplate("raw", ", volumeMode: Block, resources: {requests: {storage: 64Mi}}"),
				"      initContainers:\n      - {name: init, image: "+pinned+", volumeMounts: [{name: data, mountPath: /init-secret-path, subPath: secret-sub}]}\n"+
					"      containers:\n      - {name: app, image: "+pinned+", volumeMounts: [{name: data, mountPath: /app-a, subPath: secret-sub-a}, {name: data, mountPath: /app-b, readOnly: true}], volumeDevices: [{name: raw, devicePath: /dev/app-raw}]}\n"+
					"      - {name: side, image: "+pinned+"}\n"),
			check: func(t *testing.T, res *Result, out string) {
				for name, want := range map[string]spec.Claim{
					"data": {Namespace: "prod", Template: "data", StatefulSet: "db", Mode: spec.VolumeModeFilesystem, SizeBytes: 10 * gi},
					"raw":  {Namespace: "prod", Template: "raw", StatefulSet: "db", Mode: spec.VolumeModeBlock, SizeBytes: spec.MinVolumeBytes},
				} {
					if c := sealedVolume(t, res, name).Claim; c == nil || *c != want {
						t.Errorf("volume %s: claim %+v, want %+v", name, c, want)
					}
				}
				sp := withoutServiceAccount(res.Workloads[0].Spec)
				if m := sp.InitContainers[0].Mounts; len(m) != 1 || m[0] != (spec.Mount{Volume: "data", Path: "/init-secret-path", SubPath: "secret-sub"}) {
					t.Errorf("init mounts %+v", m)
				}
				if m := sp.Containers[0].Mounts; len(m) != 2 || m[0].SubPath != "secret-sub-a" || !m[1].ReadOnly || m[0].ReadOnly {
					t.Errorf("app mounts %+v", m)
				}
				if id, err := sealedVolume(t, res, "data").Claim.Identity("db-1", "data"); err != nil || id != "prod/data-db-1" {
					t.Errorf("identity %q, %v", id, err)
				}
				notIn(t, out, "/init-secret-path", "secret-sub", "/app-a", "/app-b", "/dev/app-raw")
				tmpl, ann := outputPodSpec(t, out, "StatefulSet", "db")
				checkPlaceholderVolumes(t, res, tmpl, ann)
				if len(tmpl.Spec.Containers[1].VolumeMounts)+len(tmpl.Spec.Containers[1].VolumeDevices) != 0 {
					t.Errorf("a container without the volume mounts it: %+v", tmpl.Spec.Containers[1])
				}
				var sts *appsv1.StatefulSet
				for _, o := range strictDecodeOutput(t, out) {
					if s, ok := o.(*appsv1.StatefulSet); ok {
						sts = s
					}
				}
				if vct := sts.Spec.VolumeClaimTemplates; len(vct) != 2 || vct[1].Spec.VolumeMode == nil || *vct[1].Spec.VolumeMode != corev1.PersistentVolumeBlock {
					t.Errorf("claim templates changed: %+v", vct)
				}
			},
		},
		{
			name: "ephemeral volume",
			input: deployment(ctr(fsMount) + "      volumes:\n      - name: data\n        ephemeral:\n          volumeClaimTemplate:\n" +
				"            spec: {accessModes: [ReadWriteOnce], storageClassName: fast, resources: {requests: {storage: 512Mi}}}\n"),
			check: func(t *testing.T, res *Result, out string) {
				want := spec.Claim{Namespace: "prod", Ephemeral: true, Mode: spec.VolumeModeFilesystem, SizeBytes: 512 << 20}
				if c := sealedVolume(t, res, "data").Claim; c == nil || *c != want {
					t.Errorf("claim %+v", c)
				}
				tmpl, ann := outputPodSpec(t, out, "Deployment", "app")
				checkPlaceholderVolumes(t, res, tmpl, ann)
				if e := tmpl.Spec.Volumes[0].Ephemeral; e == nil || *e.VolumeClaimTemplate.Spec.StorageClassName != "fast" {
					t.Errorf("ephemeral source changed: %+v", tmpl.Spec.Volumes)
				}
			},
		},
		{
			name:  "the volumes annotation is ours: a sealed value that equals a mode does not refuse it",
			input: deploymentPVC(storage1Gi, "", fsMount+", env: [{name: MODE, value: Filesystem}, {name: SIZE, value: \"1073741824\"}]"),
			check: func(t *testing.T, res *Result, out string) {
				if _, ann := outputPodSpec(t, out, "Deployment", "app"); ann["data"].SizeBytes != gi {
					t.Errorf("annotation %v", ann)
				}
			},
		},
		{
			name:  "--allow-host-volumes does not make a PVC a host volume",
			input: deploymentPVC(storage1Gi, "", fsMount),
			opts:  Options{AllowHostVolumes: true},
			check: func(t *testing.T, res *Result, _ string) {
				if v := sealedVolume(t, res, "data"); v.Kind != spec.VolumeEncrypted {
					t.Errorf("volume %+v", v)
				}
			},
		},
		{
			name: "a bare Pod's claim is not shared: no warning",
			input: pvc("data-pvc", storage1Gi) + "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod}\nspec:\n" + strings.ReplaceAll(ctr(fsMount), "      ", "  ") +
				"  volumes: [{name: data, persistentVolumeClaim: {claimName: data-pvc}}]\n",
			check: func(t *testing.T, res *Result, out string) {
				if c := sealedVolume(t, res, "data").Claim; c.ClaimName != "data-pvc" {
					t.Errorf("claim %+v", c)
				}
				for _, w := range res.Warnings {
					if strings.Contains(w, "ReadWriteOncePod") {
						t.Errorf("warning %q", w)
					}
				}
				tmpl, ann := outputPodSpec(t, out, "Pod", "p")
				checkPlaceholderVolumes(t, res, tmpl, ann)
			},
		},
		{
			name:  "read-only PVC",
			input: deploymentPVC(storage1Gi, ", readOnly: true", fsMount),
			check: func(t *testing.T, res *Result, out string) {
				if c := sealedVolume(t, res, "data").Claim; c == nil || !c.ReadOnly {
					t.Errorf("claim %+v", c)
				}
				tmpl, _ := outputPodSpec(t, out, "Deployment", "app")
				if pv := tmpl.Spec.Volumes[0].PersistentVolumeClaim; pv == nil || !pv.ReadOnly {
					t.Errorf("placeholder volume %+v", tmpl.Spec.Volumes[0])
				}
			},
		},
		{
			name:  "namespace from -n",
			input: strings.ReplaceAll(deploymentPVC(storage1Gi, "", fsMount), "namespace: prod", "namespace: team"),
			check: func(t *testing.T, res *Result, _ string) {
				if c := sealedVolume(t, res, "data").Claim; c.Namespace != "team" {
					t.Errorf("claim %+v", c)
				}
			},
		},
		{
			name:  "namespace defaulted",
			input: strings.ReplaceAll(deploymentPVC(storage1Gi, "", fsMount), ", namespace: prod", ""),
			opts:  Options{Namespace: "team"},
			check: func(t *testing.T, res *Result, _ string) {
				if c := sealedVolume(t, res, "data").Claim; c.Namespace != "team" {
					t.Errorf("claim %+v", c)
				}
			},
		},
		{
			name:    "too-small claim",
			input:   deploymentPVC("  resources: {requests: {storage: 10Mi}}\n", "", fsMount),
			wantErr: []string{"(Deployment prod/app): spec.template.spec.volumes[0].persistentVolumeClaim", `volume "data"`, "PersistentVolumeClaim prod/data-pvc", "10Mi", "at least 64Mi"},
		},
		{
			name:    "too-small claim template",
			input:   statefulSet(claimTemplate("data", ", resources: {requests: {storage: 1Mi}}"), ctr(fsMount)),
			wantErr: []string{"(StatefulSet prod/db): spec.volumeClaimTemplates[0].spec.resources.requests.storage", `volume "data"`, "at least 64Mi"},
		},
		{
			name:    "too-large claim",
			input:   deploymentPVC("  resources: {requests: {storage: 65Ti}}\n", "", fsMount),
			wantErr: []string{"spec.template.spec.volumes[0].persistentVolumeClaim", "spec.resources.requests.storage: 65Ti is more than a sealed volume may hold (64Ti)"},
		},
		{
			name:    "unknown volumeMode",
			input:   statefulSet(claimTemplate("data", ", volumeMode: Raw, resources: {requests: {storage: 1Gi}}"), ctr(fsMount)),
			wantErr: []string{"(StatefulSet prod/db): spec.volumeClaimTemplates[0].spec.volumeMode", `"Raw" is neither Filesystem nor Block`},
		},
		{
			name:    "claim template with an unknown field",
			input:   statefulSet(claimTemplate("data", ", resource: {requests: {storage: 1Gi}}"), ctr(fsMount)),
			wantErr: []string{"(StatefulSet prod/db): spec.volumeClaimTemplates", `unknown field "resource"`},
		},
		{
			name:    "missing storage request",
			input:   deploymentPVC("", "", fsMount),
			wantErr: []string{"spec.template.spec.volumes[0].persistentVolumeClaim", "PersistentVolumeClaim prod/data-pvc", "spec.resources.requests.storage: missing"},
		},
		{
			name:    "missing storage request, ephemeral",
			input:   deployment(ctr(fsMount) + "      volumes: [{name: data, ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce]}}}}]\n"),
			wantErr: []string{"spec.template.spec.volumes[0].ephemeral.volumeClaimTemplate.spec.resources.requests.storage", `volume "data"`, "missing"},
		},
		{
			name:    "claim not in the input",
			input:   deployment(ctr(fsMount) + "      volumes: [{name: data, persistentVolumeClaim: {claimName: elsewhere}}]\n"),
			wantErr: []string{"(Deployment prod/app): spec.template.spec.volumes[0].persistentVolumeClaim.claimName", `volume "data"`, "PersistentVolumeClaim prod/elsewhere is not in the input", "add its manifest"},
		},
		{
			name:    "ReadWriteMany refused",
			input:   strings.Replace(deploymentPVC(storage1Gi, "", fsMount), "[ReadWriteOnce]", "[ReadWriteOnce, ReadWriteMany]", 1),
			wantErr: []string{"PersistentVolumeClaim prod/data-pvc", "ReadWriteMany", "one pod at a time"},
		},
		{
			name:    "Block claim mounted as a filesystem",
			input:   deploymentPVC("  volumeMode: Block\n"+storage1Gi, "", fsMount),
			wantErr: []string{"spec.template.spec.containers[0].volumeMounts[0]", `volume "data" is a Block claim`, "volumeDevices"},
		},
		{
			name:    "Filesystem claim as a device",
			input:   deploymentPVC(storage1Gi, "", ", volumeDevices: [{name: data, devicePath: /dev/x}]"),
			wantErr: []string{"spec.template.spec.containers[0].volumeDevices[0]", `volume "data" is a Filesystem claim`},
		},
		{
			name:    "device of a non-claim volume",
			input:   deployment(ctr(", volumeDevices: [{name: t, devicePath: /dev/x}]") + "      volumes: [{name: t, emptyDir: {}}]\n"),
			wantErr: []string{"spec.template.spec.containers[0].volumeDevices[0]", `volume "t" is not a PersistentVolumeClaim`},
		},
		{
			name:    "subPathExpr refused",
			input:   deploymentPVC(storage1Gi, "", ", volumeMounts: [{name: data, mountPath: /d, subPathExpr: $(POD_NAME)}]"),
			wantErr: []string{"spec.template.spec.containers[0].volumeMounts[0].subPathExpr", "subPath"},
		},
		{
			name: "a claim template replaces the pod volume of its name",
			input: statefulSet(claimTemplate("data", ", resources: {requests: {storage: 1Gi}}"),
				ctr(fsMount)+"      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n"),
			check: func(t *testing.T, res *Result, out string) {
				if c := sealedVolume(t, res, "data").Claim; c == nil || c.Template != "data" || c.ClaimName != "" {
					t.Errorf("claim %+v", c)
				}
				tmpl, ann := outputPodSpec(t, out, "StatefulSet", "db")
				checkPlaceholderVolumes(t, res, tmpl, ann)
			},
		},
		{
			name:  "a user's sealpod.io/volumes annotation is replaced",
			input: strings.Replace(deployment(ctr("")), "metadata: {labels: {app: a}}", "metadata: {labels: {app: a}, annotations: {sealpod.io/volumes: '{\"x\":{\"mode\":\"Block\",\"sizeBytes\":67108864}}'}}", 1),
			check: func(t *testing.T, res *Result, out string) {
				if _, ann := outputPodSpec(t, out, "Deployment", "app"); ann != nil {
					t.Errorf("annotation kept: %v", ann)
				}
			},
		},
	}
	runLeakCases(t, tests)
}

func TestTooManyEncryptedVolumes(t *testing.T) {
	var tmpls strings.Builder
	for i := range spec.MaxPlaceholderVolumes + 1 {
		tmpls.WriteString(claimTemplate("d"+string(rune('a'+i)), ", resources: {requests: {storage: 1Gi}}"))
	}
	in := statefulSet(tmpls.String(), "      containers: [{name: app, image: "+pinned+"}]\n")
	sealOrRefuse(t, in, Options{}, []string{"(StatefulSet prod/db)", "spec.template.spec.volumes: 17 encrypted volumes", "at most 16 per pod"})
}

// The MySQL replicated StatefulSet of the Kubernetes docs (testdata/README.md) seals with no
// flags: its claim template is an encrypted volume that the init container clone-mysql and
// both containers mount with a subPath.
func TestMySQLStatefulSet(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "mysql-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Seal(context.Background(), []Source{{Name: "mysql-statefulset.yaml", Data: data}},
		Options{TEEs: []string{"sim"}, KBS: testKBS(), Resolver: startRegistry(t, string(data))})
	if err != nil {
		t.Fatal(err)
	}
	out, err := res.Render(testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	checkNoLeak(t, string(data), out, res)
	want := spec.Claim{Namespace: "default", Template: "data", StatefulSet: "mysql", Mode: spec.VolumeModeFilesystem, SizeBytes: 10 << 30}
	if c := sealedVolume(t, res, "data").Claim; c == nil || *c != want {
		t.Errorf("claim %+v", c)
	}
	sp := res.Workloads[0].Spec
	for _, c := range []spec.Container{sp.InitContainers[1], sp.Containers[0], sp.Containers[1]} {
		if len(c.Mounts) == 0 || c.Mounts[0] != (spec.Mount{Volume: "data", Path: "/var/lib/mysql", SubPath: "mysql"}) {
			t.Errorf("container %s: mounts %+v", c.Name, c.Mounts)
		}
	}
	tmpl, ann := outputPodSpec(t, string(out), "StatefulSet", "mysql")
	checkPlaceholderVolumes(t, res, tmpl, ann)
	notIn(t, string(out), "/var/lib/mysql", "subPath")
	checkClaimsKept(t, string(data), string(out), res, []string{"data"})
	warned(t, res, "ConfigMap default/mysql is not in the input")
}

// checkClaimsKept checks that the output decodes strictly, that every StatefulSet keeps its
// volumeClaimTemplates as in the input, that each named template is an encrypted volume of
// the first workload, and that the placeholders mount them as the contract says.
func checkClaimsKept(t *testing.T, input, out string, res *Result, templates []string) {
	t.Helper()
	in := map[string]appsv1.StatefulSet{}
	for _, doc := range strings.Split(input, "\n---") {
		var sts appsv1.StatefulSet
		if sigsyaml.Unmarshal([]byte(doc), &sts) == nil && sts.Kind == "StatefulSet" {
			in[sts.Name] = sts
		}
	}
	for _, o := range strictDecodeOutput(t, out) {
		sts, ok := o.(*appsv1.StatefulSet)
		if !ok {
			continue
		}
		if !reflect.DeepEqual(sts.Spec.VolumeClaimTemplates, in[sts.Name].Spec.VolumeClaimTemplates) {
			t.Errorf("StatefulSet %s: claim templates changed:\n%+v\nwant\n%+v", sts.Name, sts.Spec.VolumeClaimTemplates, in[sts.Name].Spec.VolumeClaimTemplates)
		}
		_, ann := outputPodSpec(t, out, "StatefulSet", sts.Name)
		checkPlaceholderVolumes(t, res, &sts.Spec.Template, ann)
		for _, name := range templates {
			if c := sealedVolume(t, res, name).Claim; c == nil || c.Template != name || c.StatefulSet != sts.Name || c.Namespace != "default" {
				t.Errorf("volume %s: claim %+v", name, c)
			}
		}
	}
}
