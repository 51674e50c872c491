//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/tests/internal/proc"
)

// volumeImage is the file the shim keeps a Filesystem claim's ciphertext in (docs/runtime.md).
const volumeImage = "sealpod-volume.img"

// volumes runs a sealed StatefulSet with an encrypted volume per replica (issue 15): the
// canary it writes survives the pods' deletion, never reaches the host in clear, and the
// host's attacks on the backing files — a flipped byte, two replicas' volumes swapped, an
// older copy restored — make the guest refuse, never read other data.
func (c *cluster) volumes(t *testing.T) {
	canary := newCanary("canary-vol-")
	c.canaries = append(c.canaries, canary)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: vault}
spec: {clusterIP: None, selector: {app: vault}, ports: [{port: 8080}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: vault}
spec:
  serviceName: vault
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: vault}}
  template:
    metadata: {labels: {app: vault}}
    spec:
      containers:
      - name: store
        image: %s
        command: ["/podapp", "store", "/data"]
        env: [{name: SEALPOD_CANARY, value: %s}]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 96Mi}}
`, strings.Replace(c.podapp, c.env["SEALPOD_REGISTRY"], c.env["SEALPOD_GUEST_REGISTRY"], 1), canary)
	in := filepath.Join(c.work, "vault.yaml")
	must0(t, os.WriteFile(in, []byte(manifest), 0o644))
	sealed := c.seal(t, in, "vault") // no --allow-host-volumes: claims are sealed volumes
	out := string(must(os.ReadFile(sealed)))
	if !strings.Contains(out, "volumeClaimTemplates") || strings.Contains(out, canary) {
		t.Fatalf("sealed StatefulSet lost its claims or shows the canary:\n%s", out)
	}
	c.kubectl(t, "create", "-f", sealed)
	t.Cleanup(func() {
		c.kubectlErr("delete", "statefulset", "vault", "--wait=true", "--timeout=120s")
		c.kubectlErr("delete", "pvc", "data-vault-0", "data-vault-1", "--wait=false")
	})

	pods := []string{"vault-0", "vault-1"}
	t0 := time.Now()
	c.waitStore(t, pods, "store: canary written")
	t.Logf("sealed StatefulSet vault (2 replicas, an encrypted volume each) wrote its canary %v after kubectl create", time.Since(t0).Round(time.Millisecond))

	// Deleted pods come back (new VMs) and find the data.
	c.kubectl(t, "delete", "pod", "vault-0", "vault-1", "--wait=true")
	c.waitStore(t, pods, "store: canary kept")
	// The running VMs' consoles and the shim's state hold no canary either.
	if hits := scanFor("/run/sealpod", []byte(canary)); len(hits) > 0 {
		t.Fatalf("canary in the shim's state or a console: %v", hits)
	}

	imgs := make([]string, len(pods))
	for i, p := range pods {
		pv := c.kubectl(t, "get", "pvc", "data-"+p, "-o", "jsonpath={.spec.volumeName}")
		dir := c.kubectl(t, "get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}{.spec.local.path}")
		imgs[i] = filepath.Join(dir, volumeImage)
		if st, err := os.Stat(imgs[i]); err != nil || st.Size() < 96<<20 {
			t.Fatalf("claim data-%s: backing file %s: %v", p, imgs[i], err)
		}
		if hits := scanFor(dir, []byte(canary)); len(hits) > 0 {
			t.Fatalf("canary in clear in the PV of %s: %v", p, hits)
		}
	}

	// Every attack below is made with the replicas stopped, as a node would.
	c.scale(t, 0)
	copyFile := func(src, dst string) { must0(t, os.WriteFile(dst, must(os.ReadFile(src)), 0o600)) }

	// Two replicas' volumes swapped: each opens with the other's claim identity → refused.
	must0(t, os.Rename(imgs[0], imgs[0]+".swap"))
	must0(t, os.Rename(imgs[1], imgs[0]))
	must0(t, os.Rename(imgs[0]+".swap", imgs[1]))
	c.scale(t, 2)
	c.waitRefused(t, "vault-0", "does not open with this workload's keys and claim identity")
	c.waitRefused(t, "vault-1", "does not open with this workload's keys and claim identity")
	c.scale(t, 0)
	must0(t, os.Rename(imgs[0], imgs[0]+".swap"))
	must0(t, os.Rename(imgs[1], imgs[0]))
	must0(t, os.Rename(imgs[0]+".swap", imgs[1]))

	// An older copy restored: vault-0 mounted once more after the copy was taken.
	old := imgs[0] + ".old"
	copyFile(imgs[0], old)
	c.scale(t, 2)
	c.waitStore(t, pods, "store: canary kept")
	c.scale(t, 0)
	latest := imgs[0] + ".latest"
	copyFile(imgs[0], latest)
	copyFile(old, imgs[0])
	c.scale(t, 2)
	c.waitRefused(t, "vault-0", "volume rollback detected")
	c.scale(t, 0)
	copyFile(latest, imgs[0])

	// One byte of vault-1's ciphertext flipped where the guest must read it (the first data
	// sector: the volume header): the read fails, the guest never sees other data.
	flipFirstDataByte(t, imgs[1])
	c.scale(t, 2)
	c.waitStore(t, pods[:1], "store: canary kept")
	c.waitRefused(t, "vault-1", "volume data failed its integrity check")
	for _, f := range []string{old, latest} {
		os.Remove(f)
	}
}

// scale sets the vault StatefulSet's replicas and waits until that many pods exist. Before a
// scale-up it deletes the pods' old events, so waitRefused reads only the new pods' ones.
func (c *cluster) scale(t *testing.T, n int) {
	t.Helper()
	if n > 0 {
		for _, p := range []string{"vault-0", "vault-1"} {
			c.kubectl(t, "delete", "events", "--field-selector", "involvedObject.name="+p)
		}
	}
	c.kubectl(t, "scale", "statefulset", "vault", fmt.Sprintf("--replicas=%d", n))
	proc.WaitFor(t, fmt.Sprintf("vault at %d pods", n), 180*time.Second, func() bool {
		out, _ := c.kubectlErr("get", "pods", "-l", "app=vault", "-o", "name")
		return len(strings.Fields(out)) == n
	})
}

// waitStore waits until each pod's log says what podapp store found.
func (c *cluster) waitStore(t *testing.T, pods []string, want string) {
	t.Helper()
	for _, p := range pods {
		var logs string
		proc.WaitFor(t, p+": "+want, 300*time.Second, func() bool {
			logs, _ = c.kubectlErr("logs", p)
			return strings.Contains(logs, "store: ")
		})
		if !strings.Contains(logs, want) {
			t.Fatalf("%s: %q, want %q (console: %s)", p, logs, want, c.console(p))
		}
	}
}

// console returns the tails of the sealed VMs' consoles (the shim's console.log, allow-listed
// agent lines and kernel errors), for a failure message.
func (c *cluster) console(pod string) string {
	out := []string{"(looking for " + pod + ")"}
	ents, _ := filepath.Glob("/run/sealpod/*/console.log")
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err == nil && len(b) > 0 {
			if len(b) > 1500 {
				b = b[len(b)-1500:]
			}
			out = append(out, e+":\n"+string(b))
		}
	}
	return strings.Join(out, "\n")
}

// waitRefused waits for an event of pod saying its container could not be created, with the
// guest's reason (allow-listed, no data), and checks it never started.
func (c *cluster) waitRefused(t *testing.T, pod, reason string) {
	t.Helper()
	var ev string
	proc.WaitFor(t, pod+" refused ("+reason+")", 300*time.Second, func() bool {
		ev = c.events(pod)
		return strings.Contains(ev, reason)
	})
	if logs, _ := c.kubectlErr("logs", pod); strings.Contains(logs, "store:") {
		t.Fatalf("%s started on a volume the guest must refuse: %q (events %s)", pod, logs, ev)
	}
	t.Logf("%s refused: %s", pod, lastLine(ev))
}

// flipFirstDataByte flips one byte of the first data sector of a sealed volume's backing
// file, found from its dm-integrity superblock (docs/volumes.md "On-disk format"): after the
// 4 KiB superblock come the journal sections, then the first area's tags, then its data.
func flipFirstDataByte(t *testing.T, img string) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	must0(t, err)
	defer f.Close()
	sb := make([]byte, 512)
	_, err = f.ReadAt(sb, 0)
	must0(t, err)
	if !bytes.HasPrefix(sb, []byte("integrt\x00")) {
		t.Fatalf("%s: no dm-integrity superblock", img)
	}
	off := integrityDataOffset(t, sb)
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off+100)
	must0(t, err)
	b[0] ^= 0x40
	_, err = f.WriteAt(b, off+100)
	must0(t, err)
	must0(t, f.Sync())
}

// integrityDataOffset is the byte offset of the first data sector of a dm-integrity device
// without a separate metadata device, as Linux lays it out (drivers/md/dm-integrity.c,
// calculate_journal_section_size, calculate_device_limits, get_data_sector): the 8-sector
// superblock and the journal sections, then the first area's tags (a metadata run padded to
// 4 KiB with fix_padding), then its data.
func integrityDataOffset(t *testing.T, sb []byte) int64 {
	t.Helper()
	logInterleave := int64(sb[9])
	tagSize := int64(binary.LittleEndian.Uint16(sb[10:12]))
	journalSections := int64(binary.LittleEndian.Uint32(sb[12:16]))
	flags := binary.LittleEndian.Uint32(sb[24:28])
	log2SectorsPerBlock := int64(sb[28])
	const haveJournalMAC, fixedPadding = 0x1, 0x8
	if tagSize == 0 || logInterleave == 0 || journalSections == 0 || flags&fixedPadding == 0 {
		t.Fatalf("dm-integrity superblock: tag size %d, interleave 2^%d, journal sections %d, flags %#x", tagSize, logInterleave, journalSections, flags)
	}
	sectorsPerBlock := int64(1) << log2SectorsPerBlock
	entrySize := (8 + 8*sectorsPerBlock + tagSize + 7) / 8 * 8
	space := int64(512 - 8)
	if flags&haveJournalMAC != 0 {
		space -= 8
	}
	sectionSectors := (space/entrySize*8)<<log2SectorsPerBlock + 8
	initial := 8 + sectionSectors*journalSections
	run := tagSize << (logInterleave - log2SectorsPerBlock)
	run = (run + 4095) / 4096 * 4096 / 512
	return (initial + run) * 512
}
