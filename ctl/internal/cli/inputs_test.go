package cli

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/manifests"
	"github.com/sealpod/sealpod/internal/repopath"
)

// Issue #16 item 4: -k DIR builds a kustomization with the kustomize library, as kubectl -k
// does, instead of reading kustomize's own files as objects.
func TestReadInputs(t *testing.T) {
	overlay := filepath.Join("testdata", "kustomize", "overlay")
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "pod.yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"), 0o644)
	escaping := t.TempDir()
	os.WriteFile(filepath.Join(escaping, "kustomization.yaml"), []byte("resources:\n- "+filepath.Join(outside, "pod.yaml")+"\n"), 0o644)
	tests := []struct {
		name        string
		files, kust []string
		stdin       string
		wantErr     []string
		check       func(t *testing.T, srcs []manifests.Source)
	}{
		{
			name: "-k builds the overlay",
			kust: []string{overlay},
			check: func(t *testing.T, srcs []manifests.Source) {
				if len(srcs) != 1 || srcs[0].Name != "-k "+overlay {
					t.Fatalf("sources %v", srcs)
				}
				out := string(srcs[0].Data)
				for _, want := range []string{"namespace: team", "name: prod-web\n", "name: prod-web-config-", "name: prod-web-creds-", "kind: Service"} {
					if !strings.Contains(out, want) {
						t.Errorf("build lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, "Kustomization") || strings.Contains(out, "name: web-config\n") {
					t.Errorf("kustomize input copied, or references not renamed:\n%s", out)
				}
			},
		},
		{
			name:  "-f and -k together, in that order",
			files: []string{"-"},
			stdin: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
			kust:  []string{overlay},
			check: func(t *testing.T, srcs []manifests.Source) {
				if len(srcs) != 2 || srcs[0].Name != "<stdin>" || srcs[1].Name != "-k "+overlay {
					t.Fatalf("sources %v", srcs)
				}
			},
		},
		{
			name:    "-k on a directory without a kustomization",
			kust:    []string{outside},
			wantErr: []string{"-k " + outside, "no kustomization.yaml"},
		},
		{
			name:    "-f on a kustomization directory points at -k",
			files:   []string{overlay},
			wantErr: []string{"-f " + overlay, "is a kustomization", "-k " + overlay},
		},
		{
			name:    "-k refuses files outside the kustomization root, as kubectl does",
			kust:    []string{escaping},
			wantErr: []string{"-k " + escaping + ": kustomize build", "pod.yaml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srcs, err := readInputs(tt.files, tt.kust, strings.NewReader(tt.stdin))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("read %d sources, want an error", len(srcs))
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, srcs)
		})
	}
}

// sealctl image create -k seals the kustomize build: generated Secrets and ConfigMaps are
// sealed, nothing of them reaches the output, the namespace is the overlay's.
func TestImageCreateKustomize(t *testing.T) {
	dir := t.TempDir()
	stdout, stderr, err := runSealctl(t, "", append(baseArgs(t, dir), "-k", filepath.Join("testdata", "kustomize", "overlay"), "--seal-secrets", "--strict",
		"--image", "r.local/a", "--keys", filepath.Join(dir, "k"), "--oci-layout", filepath.Join(dir, "l"))...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, leak := range []string{"CANARY-KUSTOMIZE-SECRET-4b7c", "CANARY-KUSTOMIZE-CONFIG-8e1d", "Kustomization", "/bin/server", "kind: Secret", "kind: ConfigMap"} {
		if strings.Contains(stdout, leak) {
			t.Errorf("%q in the sealed manifests:\n%s", leak, stdout)
		}
	}
	for _, want := range []string{"sealpod.io/workload: team.deployment.prod-web", "namespace: team", "kind: Service"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("sealed manifests lack %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "(Secret team/prod-web-creds-") {
		t.Errorf("no warning about the sealed generated Secret:\n%s", stderr)
	}
}

// A Secret created at run time is host-provided with a warning naming it; --strict refuses.
func TestImageCreateHostProvided(t *testing.T) {
	const in = `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: ` + pinnedImage + `
    env:
    - name: TOKEN
      valueFrom: {secretKeyRef: {name: made-at-runtime, key: token}}
`
	tests := []struct {
		name    string
		extra   []string
		wantErr string
		stderr  string
	}{
		{name: "warned", stderr: "warning: Secret default/made-at-runtime is not in the input: host-provided"},
		{name: "--strict", extra: []string{"--strict"}, wantErr: "Secret default/made-at-runtime, which is not in the input: --strict refuses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append(baseArgs(t, dir), "-f", "-", "--image", "r.local/a", "--keys", filepath.Join(dir, "k"), "--oci-layout", filepath.Join(dir, "l"))
			stdout, stderr, err := runSealctl(t, in, append(args, tt.extra...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if strings.Count(stderr, "made-at-runtime") != 1 || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr:\n%s", stderr)
			}
			if !strings.Contains(stdout, "name: made-at-runtime") {
				t.Errorf("placeholder lost the reference:\n%s", stdout)
			}
		})
	}
}

// pinAll pins every image to one digest (no registry needed).
type pinAll struct{}

func (pinAll) Resolve(_ context.Context, ref string) (string, error) {
	repo, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo + "@sha256:" + strings.Repeat("3", 64), nil
}

// The real-world guestbook (../shared/testdata/manifests), taken by a kustomization into
// its own namespace, seals under that namespace.
func TestKustomizeRealWorld(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(repopath.Shared(t, "manifests", "web__guestbook__all-in-one__guestbook-all-in-one.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "guestbook.yaml"), data, 0o644)
	os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("namespace: guestbook\nresources: [guestbook.yaml]\n"), 0o644)
	srcs, err := readInputs(nil, []string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := manifests.Seal(context.Background(), srcs, manifests.Options{
		TEEs: []string{"sim"}, KBS: envelope.KBS{URL: "https://kbs.test", CASHA256: strings.Repeat("c", 64)}, Resolver: pinAll{},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, w := range res.Workloads {
		ids = append(ids, w.ID)
	}
	sort.Strings(ids)
	if strings.Join(ids, ",") != "guestbook.deployment.frontend,guestbook.deployment.redis-master,guestbook.deployment.redis-replica" {
		t.Fatalf("workloads %v", ids)
	}
	for _, w := range res.Workloads {
		if sans := w.Spec.Identity.SANs; w.ID == "guestbook.deployment.frontend" && (len(sans) < 2 || sans[1] != "frontend.guestbook") {
			t.Errorf("SANs %v", sans)
		}
	}
}
