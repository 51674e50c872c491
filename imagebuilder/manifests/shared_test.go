package manifests

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Every real-world manifest of ../shared/testdata/manifests either seals or is refused
// with a message naming the object and the field.
func TestSharedManifests(t *testing.T) {
	dir := sharedDir(t, "manifests")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	// ok: number of workloads; otherwise the substrings every refusal must contain.
	want := map[string]struct {
		workloads int
		refused   []string
		warns     []string // host-provided objects (issue #16 item 1), each warned about
		claims    []string // volumeClaimTemplates sealed as encrypted volumes and kept (issue #15)
	}{
		"AI__model-serving-tensorflow__deployment.yaml":          {refused: []string{"(Deployment tf-serving)", "spec.template.spec.volumes[0].persistentVolumeClaim.claimName", `volume "model-volume"`, "PersistentVolumeClaim default/my-model-pvc is not in the input"}},
		"AI__vllm-deployment__vllm-deployment.yaml":              {workloads: 1, warns: []string{"Secret default/hf-secret is not in the input: host-provided"}},
		"cockroachdb__cockroachdb-statefulset.yaml":              {workloads: 1, claims: []string{"datadir"}},
		"databases__cassandra__cassandra-statefulset.yaml":       {workloads: 1, claims: []string{"cassandra-data"}}, // preStop exec hook sealed (issue #16 item 3)
		"databases__mysql-cinder-pd__mysql.yaml":                 {refused: []string{"(Pod mysql)", "spec.volumes[0]", "cinder"}},
		"explorer__pod.yaml":                                     {workloads: 1},
		"https-nginx__nginx-app.yaml":                            {workloads: 1, warns: []string{"Secret default/nginxsecret is not in the input: host-provided", "ConfigMap default/nginxconfigmap is not in the input: host-provided"}},
		"javaweb-tomcat-sidecar__javaweb-2.yaml":                 {workloads: 1},
		"newrelic-infrastructure__newrelic-infra-daemonset.yaml": {refused: []string{"(DaemonSet newrelic-infra-agent)", "spec.template.spec.hostNetwork", "hostPath", "securityContext.privileged"}},
		"selenium__selenium-hub-deployment.yaml":                 {workloads: 1},
		"spark__spark-worker-controller.yaml":                    {workloads: 1},
		"storage__minio__minio-distributed-statefulset.yaml":     {workloads: 1, claims: []string{"data"}},
		"web__guestbook-go__guestbook-controller.yaml":           {workloads: 1},
		"web__guestbook-go__redis-master-controller.yaml":        {workloads: 1},
		"web__guestbook__all-in-one__guestbook-all-in-one.yaml":  {workloads: 3},
	}
	var texts []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		texts = append(texts, string(b))
	}
	resolver := startRegistry(t, texts...)
	for i, f := range files {
		base := filepath.Base(f)
		t.Run(base, func(t *testing.T) {
			w, ok := want[base]
			if !ok {
				t.Fatalf("no expectation for %s: add one", base)
			}
			res, err := Seal(context.Background(), []Source{{Name: base, Data: []byte(texts[i])}},
				Options{TEEs: []string{"sim"}, KBS: testKBS(), Resolver: resolver})
			if w.refused != nil {
				if err == nil {
					t.Fatalf("sealed, want refusal")
				}
				for _, s := range append([]string{base + ": document "}, w.refused...) {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("refusal does not mention %q:\n%v", s, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if len(res.Workloads) != w.workloads {
				t.Fatalf("%d workloads, want %d", len(res.Workloads), w.workloads)
			}
			for _, want := range w.warns {
				warned(t, res, want)
			}
			out, err := res.Render(testImageRef)
			if err != nil {
				t.Fatal(err)
			}
			checkNoLeak(t, texts[i], out, res)
			checkClaimsKept(t, texts[i], string(out), res, w.claims)
		})
	}
}

// checkNoLeak asserts that no command, argument, env value or image name of the sealed
// specs appears in the sealed manifests, and that each envelope opens to the spec.
func checkNoLeak(t *testing.T, input string, out []byte, res *Result) {
	t.Helper()
	for _, w := range res.Workloads {
		var secrets []string
		for _, c := range append(append([]spec.Container(nil), w.Spec.InitContainers...), w.Spec.Containers...) {
			secrets = append(secrets, c.Image)
			secrets = append(secrets, c.Command...)
			secrets = append(secrets, c.Args...)
			for _, h := range c.Hooks { // lifecycle hooks (hooks.go)
				secrets = append(secrets, h.Exec...)
				if h.HTTPGet != nil {
					secrets = append(secrets, h.HTTPGet.Path)
					for _, hd := range h.HTTPGet.Headers {
						secrets = append(secrets, hd.Value)
					}
				}
			}
			for _, e := range c.Env {
				if e.Value != "" {
					secrets = append(secrets, e.Value)
				}
			}
		}
		for _, m := range imageLine.FindAllStringSubmatch(input, -1) {
			secrets = append(secrets, m[1]) // every image reference as the owner wrote it
		}
		for _, s := range secrets {
			if len(s) < 4 || !strings.Contains(input, s) || strings.Contains(w.ID, s) {
				continue // too short to be meaningful, not from the input, or public (MinIO's access key "minio" is also its name)
			}
			if bytes.Contains(out, []byte(s)) {
				t.Errorf("workload %s: %q appears in the sealed manifests", w.ID, s)
			}
			if bytes.Contains(w.Envelope, []byte(s)) {
				t.Errorf("workload %s: %q appears in the envelope", w.ID, s)
			}
		}
		_, plain, err := envelope.Open(w.Envelope, w.Key)
		if err != nil {
			t.Fatalf("workload %s: %v", w.ID, err)
		}
		got, err := spec.Unmarshal(plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Containers) != len(w.Spec.Containers) || got.Workload != w.ID {
			t.Fatalf("workload %s: envelope holds %+v", w.ID, got)
		}
		if !bytes.Contains(out, []byte(AnnotationWorkload+": "+w.ID)) {
			t.Errorf("workload %s: no %s annotation in the output", w.ID, AnnotationWorkload)
		}
	}
	if n := bytes.Count(out, []byte("image: "+testImageRef)); n == 0 {
		t.Error("no placeholder pins the secure image")
	}
}

// A golden file pins the shape of the placeholders for the guestbook.
func TestGoldenGuestbook(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(sharedDir(t, "manifests"), "web__guestbook__all-in-one__guestbook-all-in-one.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sealText(t, string(data), Options{Resolver: startRegistry(t, string(data))})
	if err != nil {
		t.Fatal(err)
	}
	out, err := res.Render(testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "guestbook.sealed.yaml")
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("sealed output differs from %s (run go test -update and review the diff):\n%s", golden, out)
	}
	// SANs come from the Services that select each Deployment.
	ids := map[string][]string{}
	for _, w := range res.Workloads {
		ids[w.ID] = w.Spec.Identity.SANs
	}
	keys := make([]string, 0, len(ids))
	for k := range ids {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if strings.Join(keys, ",") != "default.deployment.frontend,default.deployment.redis-master,default.deployment.redis-replica" {
		t.Fatalf("workload ids %v", keys)
	}
	if sans := ids["default.deployment.frontend"]; len(sans) != 5 || sans[2] != "frontend.default.svc" {
		t.Fatalf("frontend SANs %v", sans)
	}
}
