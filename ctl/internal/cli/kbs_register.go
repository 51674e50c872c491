package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/spf13/cobra"
)

// maxKeysFile bounds a --keys file read by `sealctl kbs register`.
const maxKeysFile = 16 << 20

// newKBSRegisterCmd is `sealctl kbs register -f keys.json`: the registrations of an offline
// `image create --keys` run, made later against a broker.
func newKBSRegisterCmd(f *kbsFlags) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "register -f KEYS.json",
		Short: "Register the workloads of a keys file written by 'sealctl image create --keys'",
		Long: `register reads a keys file that 'sealctl image create --keys FILE' wrote when it sealed
offline (no broker at hand) and registers each workload with the broker, exactly as image
create would have: TEEs, reference measurements, envelope digest, minimum TCB, SANs, data key
(and the PEF credential). Every record is checked before the first request; a workload that
exists gets a new generation. The keys file holds the data keys: keep it like them.`,
		Example: `  # Seal offline, register later
  sealctl image create -f app.yaml --guest out/guest --tee snp --kbs https://kbs.example:8443 \
      --kbs-ca kbs-ca.pem --oci-layout out/app-image --keys app.keys.json > app.sealed.yaml
  sealctl kbs --kbs-dir /var/lib/sealpod-kbs register -f app.keys.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var req requiredFlags
			req.need(file != "", "-f")
			if err := req.err(); err != nil {
				return err
			}
			regs, err := readKeysFile(file)
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			entries, err := putWorkloads(cmd.Context(), c, regs, nil)
			if err != nil {
				return fmt.Errorf("keys file %s: %w", file, err)
			}
			return printObject(cmd.OutOrStdout(), f.output, entries, func(out io.Writer) error {
				for _, e := range entries {
					if _, err := fmt.Fprintf(out, "workload %s registered (generation %d, history entry %d)\n", e.WorkloadID, e.Workload.Generation, e.Seq); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "keys file written by 'sealctl image create --keys'")
	return cmd
}

// readKeysFile parses and checks every record of a keys file.
func readKeysFile(path string) ([]api.Workload, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxKeysFile+1))
	if err != nil {
		return nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	if len(b) > maxKeysFile {
		return nil, fmt.Errorf("keys file %s: larger than %d bytes", path, maxKeysFile)
	}
	var kf keyFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&kf); err != nil {
		return nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	if kf.Version != 1 {
		return nil, fmt.Errorf("keys file %s: version %d, want 1", path, kf.Version)
	}
	if len(kf.Workloads) == 0 {
		return nil, fmt.Errorf("keys file %s: workloads: empty", path)
	}
	regs := make([]api.Workload, 0, len(kf.Workloads))
	for i, r := range kf.Workloads {
		w := r.workload()
		if err := w.Validate(); err != nil {
			return nil, fmt.Errorf("keys file %s: workloads[%d] (%s): %w", path, i, r.ID, err)
		}
		regs = append(regs, w)
	}
	return regs, nil
}
