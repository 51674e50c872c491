package manifests

import "strings"

// namespacedKinds are the built-in namespaced kinds, by API group ("" = core) and kind.
// Sealing binds a workload to its namespace (workload id, SANs, the Secrets it reads), so an
// object of one of these kinds without metadata.namespace gets Options.Namespace written
// into the output, as `kubectl create -n NS` places it. Cluster-scoped kinds and kinds this
// table does not know (custom resources) are left as they are: their scope is the API
// server's to say.
var namespacedKinds = map[string]map[string]bool{
	"": {
		"Pod": true, "Service": true, "ConfigMap": true, "Secret": true, "ServiceAccount": true,
		"PersistentVolumeClaim": true, "ReplicationController": true, "Endpoints": true,
		"LimitRange": true, "ResourceQuota": true, "PodTemplate": true, "Event": true,
	},
	"apps":                      {"Deployment": true, "StatefulSet": true, "DaemonSet": true, "ReplicaSet": true, "ControllerRevision": true},
	"extensions":                {"Deployment": true, "DaemonSet": true, "ReplicaSet": true, "Ingress": true, "NetworkPolicy": true},
	"batch":                     {"Job": true, "CronJob": true},
	"autoscaling":               {"HorizontalPodAutoscaler": true},
	"policy":                    {"PodDisruptionBudget": true},
	"networking.k8s.io":         {"Ingress": true, "NetworkPolicy": true},
	"rbac.authorization.k8s.io": {"Role": true, "RoleBinding": true},
	"discovery.k8s.io":          {"EndpointSlice": true},
	"coordination.k8s.io":       {"Lease": true},
	"events.k8s.io":             {"Event": true},
	"storage.k8s.io":            {"CSIStorageCapacity": true},
}

// placeNamespace writes the namespace an object without one is sealed for.
func (s *sealer) placeNamespace(o *object) {
	if o.namespace != "" {
		return
	}
	group, _, ok := strings.Cut(o.apiVersion, "/")
	if !ok {
		group = ""
	}
	if !namespacedKinds[group][o.kind] {
		return
	}
	md, ok := o.raw["metadata"].(map[string]any)
	if !ok {
		md = map[string]any{}
		o.raw["metadata"] = md
	}
	md["namespace"] = s.opts.Namespace
}
