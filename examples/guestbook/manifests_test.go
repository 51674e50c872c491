// Package guestbook holds the guestbook example's manifests (README.md); this test keeps them
// consistent with each other and with upstream's shape.
package guestbook

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

func load(t *testing.T, file string, into any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// TestManifests: upstream's six files; each Service selects its Deployment's pods on the port
// the container listens on; the images are the local registry's; the follower replicates
// from the leader's Service name; the frontend finds Redis by DNS.
func TestManifests(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	want := []string{"frontend-deployment.yaml", "frontend-service.yaml", "redis-follower-deployment.yaml",
		"redis-follower-service.yaml", "redis-leader-deployment.yaml", "redis-leader-service.yaml"}
	if !slices.Equal(files, want) {
		t.Fatalf("manifests %v, want upstream's %v", files, want)
	}
	for _, name := range []string{"redis-leader", "redis-follower", "frontend"} {
		var d appsv1.Deployment
		var s corev1.Service
		load(t, name+"-deployment.yaml", &d)
		load(t, name+"-service.yaml", &s)
		if d.Name != name || s.Name != name || d.Kind != "Deployment" || s.Kind != "Service" {
			t.Fatalf("%s: names %q %q kinds %q %q", name, d.Name, s.Name, d.Kind, s.Kind)
		}
		tmpl := labels.Set(d.Spec.Template.Labels)
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(tmpl) || !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(tmpl) {
			t.Errorf("%s: Service selector %v / Deployment selector %v do not select the pods %v", name, s.Spec.Selector, d.Spec.Selector.MatchLabels, tmpl)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if !strings.HasPrefix(c.Image, "10.244.0.1:5000/sealpod/") {
			t.Errorf("%s: image %q, want the cluster registry's", name, c.Image)
		}
		target := s.Spec.Ports[0].TargetPort.IntValue()
		if target == 0 {
			target = int(s.Spec.Ports[0].Port)
		}
		if len(c.Ports) != 1 || int(c.Ports[0].ContainerPort) != target {
			t.Errorf("%s: container ports %v, Service targets %d", name, c.Ports, target)
		}
		switch name {
		case "redis-follower":
			if strings.Join(c.Args, " ") != "--replicaof redis-leader 6379" {
				t.Errorf("follower args %q", c.Args)
			}
		case "frontend":
			if s.Spec.Ports[0].Port != 80 || len(c.Env) != 1 || c.Env[0].Name != "GET_HOSTS_FROM" || c.Env[0].Value != "dns" {
				t.Errorf("frontend: Service port %d, env %v (want upstream's 80 and GET_HOSTS_FROM=dns)", s.Spec.Ports[0].Port, c.Env)
			}
		}
	}
}
