package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sealpod/sealpod/kbs/adminclient"
)

// newKBSAdminCmd is `sealctl kbs admin`: the broker's admin credentials.
func newKBSAdminCmd(f *kbsFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Revoke admin client certificates and list the deny-list",
		Long: `Admin client certificates (from 'sealpod-kbs init' or 'sealpod-kbs admin-cert') are valid
for 90 days by default. A revoked certificate is refused on every admin request, by every
replica (the deny-list is in the broker's store). You cannot revoke the certificate you are
using.`,
		Example: `  sealctl kbs admin revoke ./alice/client.pem --reason "laptop lost"
  sealctl kbs admin revoke 4f:1a:...:9c
  sealctl kbs admin list-revoked -o yaml`,
	}
	cmd.AddCommand(newKBSAdminRevokeCmd(f), newKBSAdminListRevokedCmd(f))
	return cmd
}

func newKBSAdminRevokeCmd(f *kbsFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke (SERIAL | CERT.pem)",
		Short: "Put an admin certificate on the broker's deny-list",
		Long: `Revoke an admin client certificate, named by its serial (hex, as 'openssl x509 -serial'
or 'sealpod-kbs admin-cert' print it, colons allowed) or by its PEM file (then the deny-list
also records its subject and expiry). Revocation cannot be undone.`,
		Example: `  sealctl kbs admin revoke ./alice/client.pem --reason "left the team"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := revokeRequest(args[0], reason)
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			r, err := c.Revoke(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, r, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "admin certificate %s revoked at %s by %s\n", r.Serial, r.RevokedAt.UTC().Format(time.RFC3339), r.RevokedBy)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the deny-list and the audit log)")
	return cmd
}

// revokeRequest reads arg as a PEM certificate file when it names one, else as a serial.
func revokeRequest(arg, reason string) (adminclient.RevokeRequest, error) {
	if strings.ContainsAny(arg, "/.") || strings.HasSuffix(arg, ".pem") {
		b, err := os.ReadFile(arg)
		if err != nil {
			return adminclient.RevokeRequest{}, fmt.Errorf("revoke: certificate file: %w", err)
		}
		req, err := adminclient.RevokeRequestFromPEM(b, reason)
		if err != nil {
			return adminclient.RevokeRequest{}, fmt.Errorf("revoke: certificate file %s: %w", arg, err)
		}
		return req, nil
	}
	serial, err := adminclient.NormalizeSerial(arg)
	if err != nil {
		return adminclient.RevokeRequest{}, fmt.Errorf("revoke: %w", err)
	}
	return adminclient.RevokeRequest{Serial: serial, Reason: reason}, nil
}

func newKBSAdminListRevokedCmd(f *kbsFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list-revoked",
		Aliases: []string{"revoked"},
		Short:   "List the revoked admin certificates",
		Example: `  sealctl kbs admin list-revoked -o json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			rs, err := c.ListRevoked(cmd.Context())
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, rs, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tREVOKED\tBY\tSUBJECT\tNOT AFTER\tREASON")
				for _, r := range rs {
					na := ""
					if !r.NotAfter.IsZero() {
						na = r.NotAfter.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Serial, r.RevokedAt.UTC().Format(time.RFC3339), r.RevokedBy, r.Subject, na, r.Reason)
				}
				return tw.Flush()
			})
		},
	}
}
