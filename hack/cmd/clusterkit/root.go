package main

import (
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "clusterkit",
		Short:         "Helpers of the local single-node Kubernetes cluster (hack/k8s)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(NewPKICmd(), NewContainerdConfigCmd(), NewForwardCmd(), NewPackImageCmd(), NewInstallerManifestCmd(), NewDNSCmd())
	return root
}
