// Package cli holds the cobra commands of sealctl.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// NewRootCmd builds the sealctl command tree.
func NewRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sealctl",
		Short: "Seal Kubernetes workloads so that the node cannot read them",
		Long: `sealctl is the workload owner's tool for Sealpod.

It seals ordinary Kubernetes manifests into confidential workloads (encrypted pod
specs bundled with a measured guest into an OCI image), administers the key broker
and verifies a deployment.`,
		Example: `  # Seal a Deployment for the simulated TEE and write the sealed manifests
  sealctl image create -f app.yaml --guest out/guest --tee sim \
      --oci-layout out/app-image --keys app.keys.json -o app.sealed.yaml

  # Show what a secure image contains (never plaintext)
  sealctl image inspect out/app-image

  # Verify the key broker against the sealed manifests (writes verify/mesh-root.pem)
  sealctl verify --kbs https://kbs.example:8443 --kbs-ca kbs-ca.pem \
      --kbs-key signing.pub.pem --expect app.sealed.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionInfo().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	for _, sub := range subcommands {
		root.AddCommand(sub())
	}
	return root
}

// subcommands lists the top-level command constructors; each lives in its own file.
var subcommands = []func() *cobra.Command{
	NewImageCmd,
	NewGuestCmd,
	NewKBSCmd,
	NewVerifyCmd,
	NewVersionCmd,
}

// Execute runs sealctl with a context that is cancelled on Ctrl-C / SIGTERM and returns the
// process exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewRootCmd().ExecuteContext(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "sealctl: interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "sealctl:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return 1
	}
	return 0
}
