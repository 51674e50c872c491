// Package deploy holds the Kubernetes manifests of the Sealpod node runtime (namespace, RBAC,
// installer and cleanup DaemonSets, RuntimeClasses), embedded so tests and tools can apply them.
package deploy

import "embed"

// Manifests holds every *.yaml file of this directory.
//
//go:embed *.yaml
var Manifests embed.FS

// InstallOrder lists the manifests to apply for an install, in order. cleanup-daemonset.yaml is
// applied only to uninstall (see docs/install.md).
var InstallOrder = []string{"namespace.yaml", "rbac.yaml", "daemonset.yaml", "runtimeclasses.yaml"}
