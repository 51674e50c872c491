package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

// The readiness check: what a node needs before pods of its TEE can run there, item by item,
// each only where the node's TEE needs it (docs/hardware.md "Node readiness check").

// CheckStatus is the outcome of one item.
type CheckStatus string

// Outcomes.
const (
	CheckOK   CheckStatus = "ok"
	CheckFail CheckStatus = "fail"
	CheckSkip CheckStatus = "skip"
)

// Item scopes: a node item decides whether the node is labelled; a cluster item (the
// RuntimeClass) is reported but does not hold the label back, because the RuntimeClass selects
// nodes by that label and may be applied after the installer runs.
const (
	ScopeNode    = "node"
	ScopeCluster = "cluster"
)

// Item names, in report order.
const (
	ItemKVM          = "kvm"
	ItemTEEEnabled   = "tee-enabled"
	ItemQEMUVersion  = "qemu-version"
	ItemQEMUObject   = "qemu-object"
	ItemFirmware     = "firmware"
	ItemCBitPos      = "cbitpos"
	ItemQGS          = "qgs"
	ItemNodeConfig   = "node-config"
	ItemShim         = "shim"
	ItemContainerd   = "containerd"
	ItemRuntimeClass = "runtimeclass"
)

// CheckItem is one line of the report.
type CheckItem struct {
	Name   string      `json:"name"`
	Scope  string      `json:"scope"`
	Status CheckStatus `json:"status"`
	// Detail says what was found (ok), why it failed (fail) or why it was not checked (skip).
	Detail string `json:"detail"`
	// Fix says what to do about a failure.
	Fix string `json:"fix,omitempty"`
}

// SNPHostParams are the host's SEV-SNP launch parameters from CPUID 0x8000001F.
type SNPHostParams struct {
	// CBitPos is the page-table bit that marks encrypted memory (EBX[5:0]): QEMU's cbitpos.
	CBitPos int `json:"cbitpos"`
	// PhysAddrReduction is EBX[11:6], the physical address bits the host loses with memory
	// encryption on. QEMU's reduced-phys-bits for SNP guests is 1 (QEMU refuses other values).
	PhysAddrReduction int `json:"physAddrReduction"`
}

// CheckReport is the result of Check.
type CheckReport struct {
	TEE TEE `json:"tee"`
	// Ready: every item is ok or skipped.
	Ready bool `json:"ready"`
	// NodeReady: every node-scope item is ok or skipped (what gates the node label).
	NodeReady bool        `json:"nodeReady"`
	Items     []CheckItem `json:"checks"`
	// QEMUVersion is the version QEMU reported, when it was run.
	QEMUVersion string `json:"qemuVersion,omitempty"`
	// SNP holds the host's cbitpos, for tee snp when CPUID could be read.
	SNP *SNPHostParams `json:"snp,omitempty"`
}

// Failed returns the names of the failed items (of scope, or all when scope is "").
func (r *CheckReport) Failed(scope string) []string {
	var out []string
	for _, it := range r.Items {
		if it.Status == CheckFail && (scope == "" || it.Scope == scope) {
			out = append(out, it.Name)
		}
	}
	return out
}

// ErrNotReady is wrapped by the error of a check (or an install) that found the node not ready.
var ErrNotReady = errors.New("node not ready")

// NotReadyError carries the report of a failed check.
type NotReadyError struct {
	Report *CheckReport
	// Scope is the scope that failed ("" for any).
	Scope string
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("node not ready for TEE %s: failed: %s", e.Report.TEE, strings.Join(e.Report.Failed(e.Scope), ", "))
}

// Unwrap makes errors.Is(err, ErrNotReady) hold.
func (e *NotReadyError) Unwrap() error { return ErrNotReady }

// CPUIDReader reads one CPUID leaf of the host (DevCPUID on a real host; a fake in tests).
type CPUIDReader interface {
	CPUID(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32, err error)
}

// QGS defaults.
const (
	// DefaultQGSSocket is where Intel's Quote Generation Service listens (unix socket mode):
	// the shim's default (node config qgsSocket).
	DefaultQGSSocket = shimconfig.DefaultQGSSocket
)

// CheckOptions say what Check looks at. Paths are host paths, HostRoot is prepended to each.
type CheckOptions struct {
	// HostRoot is where the host's root filesystem is visible; default "/".
	HostRoot string
	// TEE to check for; "" takes the node config's TEE, else DetectTEE.
	TEE TEE
	// ShimConfigPath is the shim's node config; default shimconfig.DefaultPath.
	ShimConfigPath string
	// ContainerdConfig is containerd's config; default DefaultConfigPath.
	ContainerdConfig string
	// ShimDir holds the shim binary; default DefaultShimDir.
	ShimDir string
	// Handler is the runtime handler; default HandlerName.
	Handler string
	// QEMU is the QEMU binary; default the node config's (qemu-system-x86_64).
	QEMU string
	// QEMUPrefix is put before the QEMU command line, e.g. nsenter into the host's mount
	// namespace (HostExecPrefix); empty runs QEMU directly.
	QEMUPrefix []string
	// Firmware is the firmware (host path) to check for snp/tdx; "" skips the item (each pod's
	// guest bundle brings its own firmware.fd).
	Firmware string
	// QGS is the TDX Quote Generation Service: "unix:<path>" or "vsock:<cid>:<port>"; default
	// the node config's qgsSocket, else unix:DefaultQGSSocket.
	QGS string
	// KVMProbe checks that a /dev/kvm path is usable; nil: ProbeKVM.
	KVMProbe func(path string) (string, error)
	// CPUID reads the host's CPUID; nil: DevCPUID on <HostRoot>/dev/cpu/0/cpuid.
	CPUID CPUIDReader
	// RuntimeClasses looks up RuntimeClass handlers through the Kubernetes API; nil: the item
	// is skipped (no API access).
	RuntimeClasses RuntimeClassGetter
}

// Check runs the readiness check. The error is for bad options only; a node that is not
// ready gives a report with Ready false (see CheckReport.Err).
func Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	if o.HostRoot == "" {
		o.HostRoot = "/"
	}
	if o.ShimConfigPath == "" {
		o.ShimConfigPath = shimconfig.DefaultPath
	}
	if o.ContainerdConfig == "" {
		o.ContainerdConfig = DefaultConfigPath
	}
	if o.ShimDir == "" {
		o.ShimDir = DefaultShimDir
	}
	if o.Handler == "" {
		o.Handler = HandlerName
	}
	for name, p := range map[string]string{"node config": o.ShimConfigPath, "containerd config": o.ContainerdConfig, "shim dir": o.ShimDir} {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("check: %s %q is not an absolute host path", name, p)
		}
	}
	if o.Firmware != "" && !filepath.IsAbs(o.Firmware) {
		return nil, fmt.Errorf("check: firmware %q is not an absolute host path", o.Firmware)
	}
	if o.KVMProbe == nil {
		o.KVMProbe = ProbeKVM
	}
	if o.CPUID == nil {
		o.CPUID = DevCPUID{Path: o.host("/dev/cpu/0/cpuid")}
	}
	nodeCfg, nodeCfgErr := shimconfig.Load(o.host(o.ShimConfigPath))
	if o.QGS == "" && nodeCfgErr == nil && nodeCfg.QGSSocket != "" {
		o.QGS = "unix:" + nodeCfg.QGSSocket // the socket the shim will hand QEMU
	}
	qgs, err := parseQGS(o.QGS)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	t := o.TEE
	if t == "" {
		switch {
		case nodeCfgErr == nil:
			t = nodeCfg.Offers()[0] // the node's first (preferred) TEE
		default:
			if t, err = DetectTEE(o.HostRoot); err != nil {
				return nil, fmt.Errorf("check: no --tee, no node config (%v) and %w", nodeCfgErr, err)
			}
		}
	}
	if _, err := ParseTEE(string(t)); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if o.QEMU == "" {
		o.QEMU = "qemu-system-x86_64"
		if nodeCfgErr == nil {
			o.QEMU = nodeCfg.QEMU
		}
	}
	hw := !t.Simulated()
	accelKVM := hw || (nodeCfgErr == nil && nodeCfg.Accel == "kvm")

	rep := &CheckReport{TEE: t}
	add := func(it CheckItem) {
		if it.Scope == "" {
			it.Scope = ScopeNode
		}
		rep.Items = append(rep.Items, it)
	}
	notNeeded := func(name string) CheckItem {
		return CheckItem{Name: name, Status: CheckSkip, Detail: fmt.Sprintf("not needed for TEE %s", t)}
	}

	// KVM.
	if accelKVM {
		add(o.checkKVM())
	} else {
		add(CheckItem{Name: ItemKVM, Status: CheckSkip, Detail: fmt.Sprintf("not needed for TEE %s (accel tcg)", t)})
	}
	// The host kernel runs guests of the TEE.
	if hw {
		add(o.checkTEEEnabled(t))
	} else {
		add(notNeeded(ItemTEEEnabled))
	}
	// QEMU.
	if req, ok := qemuNeeds[t]; ok {
		v, vit, oit := o.checkQEMU(ctx, req)
		rep.QEMUVersion = v
		add(vit)
		add(oit)
	} else {
		// A simulated TEE needs no TEE object and no minimum version: the shim reports a
		// missing QEMU when it starts the first pod.
		add(notNeeded(ItemQEMUVersion))
		add(notNeeded(ItemQEMUObject))
	}
	// Firmware.
	switch {
	case t != TEESNP && t != TEETDX:
		add(notNeeded(ItemFirmware))
	case o.Firmware == "":
		add(CheckItem{Name: ItemFirmware, Status: CheckSkip, Detail: "no --firmware given: each pod's guest bundle brings its firmware.fd (give --firmware FILE to check a build)"})
	default:
		add(o.checkFirmware(t))
	}
	// cbitpos.
	if t == TEESNP {
		p, it := o.checkCBitPos()
		rep.SNP = p
		add(it)
	} else {
		add(notNeeded(ItemCBitPos))
	}
	// QGS.
	if t == TEETDX {
		add(o.checkQGS(ctx, qgs))
	} else {
		add(notNeeded(ItemQGS))
	}
	// The node's own Sealpod install.
	add(o.checkNodeConfig(t, nodeCfg, nodeCfgErr))
	add(o.checkShim())
	add(o.checkContainerd())
	add(o.checkRuntimeClass(ctx, t))

	rep.Ready = len(rep.Failed("")) == 0
	rep.NodeReady = len(rep.Failed(ScopeNode)) == 0
	return rep, nil
}

// Err returns a NotReadyError when an item of scope ("" for any) failed, else nil.
func (r *CheckReport) Err(scope string) error {
	if len(r.Failed(scope)) == 0 {
		return nil
	}
	return &NotReadyError{Report: r, Scope: scope}
}

func (o CheckOptions) host(p string) string { return filepath.Join(o.HostRoot, p) }

func (o CheckOptions) checkNodeConfig(t TEE, c *shimconfig.Config, err error) CheckItem {
	it := CheckItem{Name: ItemNodeConfig}
	switch {
	case err != nil:
		return fail(it, err.Error(), "run `sealpod-node-installer install` (it writes the node config)")
	case !c.Offer(t):
		return fail(it, fmt.Sprintf("%s offers tees %s, not %s", o.ShimConfigPath, c.OffersList(), t), "reinstall with --tee "+string(t))
	case !t.Simulated() && c.Accel != "kvm":
		return fail(it, fmt.Sprintf("%s: accel %s; TEE %s guests need kvm", o.ShimConfigPath, c.Accel, t), "reinstall with --accel kvm (the default for hardware TEEs)")
	}
	return ok(it, fmt.Sprintf("%s: tees %s, accel %s, qemu %s", o.ShimConfigPath, c.OffersList(), c.Accel, c.QEMU))
}

func (o CheckOptions) checkShim() CheckItem {
	it := CheckItem{Name: ItemShim}
	p := filepath.Join(o.ShimDir, ShimBinaryName)
	st, err := os.Stat(o.host(p))
	switch {
	case err != nil:
		return fail(it, err.Error(), "run `sealpod-node-installer install` (it copies the shim)")
	case !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0:
		return fail(it, fmt.Sprintf("%s: not an executable file (%s)", p, st.Mode()), "reinstall the shim")
	}
	return ok(it, p)
}

func (o CheckOptions) checkContainerd() CheckItem {
	it := CheckItem{Name: ItemContainerd}
	data, err := readLimited(o.host(o.ContainerdConfig), 16<<20)
	if err != nil {
		return fail(it, fmt.Sprintf("%s: %v", o.ContainerdConfig, err), "run `sealpod-node-installer install` (it adds the handler)")
	}
	info, err := Inspect(data)
	if err != nil {
		return fail(it, fmt.Sprintf("%s: %v", o.ContainerdConfig, err), "fix the containerd config, then reinstall")
	}
	if !slices.Contains(info.Runtimes, o.Handler) {
		return fail(it, fmt.Sprintf("%s: no runtime handler %q (runtimes: [%s])", o.ContainerdConfig, o.Handler, strings.Join(info.Runtimes, ", ")),
			"run `sealpod-node-installer install` and let it restart containerd")
	}
	return ok(it, fmt.Sprintf("%s: handler %s (config version %d)", o.ContainerdConfig, o.Handler, info.Version))
}

func (o CheckOptions) checkRuntimeClass(ctx context.Context, t TEE) CheckItem {
	it := CheckItem{Name: ItemRuntimeClass, Scope: ScopeCluster}
	name := "sealpod-" + string(t)
	if o.RuntimeClasses == nil {
		it.Status = CheckSkip
		it.Detail = fmt.Sprintf("no Kubernetes API here (in-cluster only): check with `kubectl get runtimeclass %s`", name)
		return it
	}
	h, found, err := o.RuntimeClasses.RuntimeClassHandler(ctx, name)
	switch {
	case err != nil:
		return fail(it, fmt.Sprintf("RuntimeClass %s: %v", name, err), "check the installer's API access (deploy/rbac.yaml grants get on runtimeclasses)")
	case !found:
		return fail(it, fmt.Sprintf("RuntimeClass %s not found", name), "kubectl apply -f runtime-shim/deploy/runtimeclasses.yaml")
	case h != o.Handler:
		return fail(it, fmt.Sprintf("RuntimeClass %s has handler %q, want %q", name, h, o.Handler), "kubectl apply -f runtime-shim/deploy/runtimeclasses.yaml")
	}
	return ok(it, fmt.Sprintf("RuntimeClass %s (handler %s)", name, h))
}

func ok(it CheckItem, detail string) CheckItem {
	it.Status, it.Detail = CheckOK, printable(detail)
	return it
}

func fail(it CheckItem, detail, fix string) CheckItem {
	it.Status, it.Detail, it.Fix = CheckFail, printable(detail), fix
	return it
}

// printable keeps a detail on one line of printable text: it may quote what the host said
// (QEMU's output, file contents).
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// WriteText writes the report, one line per item, and a last line saying whether the node is
// ready.
func (r *CheckReport) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, it := range r.Items {
		switch it.Status {
		case CheckOK:
			fmt.Fprintf(&b, "ok    %-13s %s\n", it.Name, it.Detail)
		case CheckFail:
			fmt.Fprintf(&b, "FAIL  %-13s %s; fix: %s\n", it.Name, it.Detail, it.Fix)
		default:
			fmt.Fprintf(&b, "skip  %-13s (%s)\n", it.Name, it.Detail)
		}
	}
	switch failed := r.Failed(""); {
	case len(failed) == 0:
		fmt.Fprintf(&b, "node ready for TEE %s\n", r.TEE)
	case r.NodeReady:
		fmt.Fprintf(&b, "node not ready for TEE %s: cluster item failed: %s (the node itself is ready)\n", r.TEE, strings.Join(failed, ", "))
	default:
		fmt.Fprintf(&b, "node not ready for TEE %s: %d failed: %s\n", r.TEE, len(failed), strings.Join(failed, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as indented JSON.
func (r *CheckReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
