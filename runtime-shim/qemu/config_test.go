package qemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.args golden files")

// digest is a fixed stand-in for an envelope digest (SHA-256 of a fixed string).
var digest = func() []byte { d := sha256.Sum256([]byte("sealpod golden envelope")); return d[:] }()

var mac = net.HardwareAddr{0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x07}

func guest(firmware string) Guest {
	return Guest{
		Kernel: "/run/sealpod/p1/rootfs/sealpod/guest/vmlinuz", Initrd: "/run/sealpod/p1/rootfs/sealpod/guest/initrd.img",
		Firmware: firmware, Cmdline: "console=ttyS0 quiet panic=-1", VCPUs: 2, MemoryMiB: 512,
	}
}

// goldenCases are the command lines under test/testdata/<name>.args (one argument per line).
func goldenCases(t *testing.T) map[string]Config {
	tap, err := os.Open(os.DevNull) // any file: only its position in ExtraFiles matters
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Close() })
	const dir = "/run/sealpod/p1"
	return map[string]Config{
		"sim-tcg": {
			TEE: TEESim, Guest: guest(""), AgentSocket: dir + "/agent.sock", SimSPSocket: dir + "/sim-sp.sock",
			NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true}, QMPSocket: dir + "/qmp.sock", PIDFile: dir + "/qemu.pid",
			Name: "sealpod-p1",
		},
		// As the shim starts an unprivileged QEMU: listening sockets and the tap as descriptors.
		"sim-tcg-fds": {
			TEE: TEESim, Guest: guest(""), AgentSocket: dir + "/agent.sock", SimSPSocket: dir + "/sim-sp.sock",
			AgentListener: tap, SimSPListener: tap, NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true}, Name: "sealpod-p1",
			EmulatedBIOS: shimconfig.DefaultEmulatedBIOS, // the node config's default
		},
		"sim-tcg-nonet": {
			TEE: TEESim, Guest: guest(""), AgentSocket: dir + "/agent.sock", SimSPSocket: dir + "/sim-sp.sock",
		},
		// As tests/guest boots its guests (through tests/qemuvm): QEMU
		// user-mode networking, the shim's user network and the guest suite's.
		"sim-tcg-usernet": {
			TEE: TEESim, Guest: guest(""), AgentSocket: dir + "/agent.sock", SimSPSocket: dir + "/sim-sp.sock",
			NIC: &NIC{User: true, MAC: UserNetMAC()},
		},
		"sim-kvm-tapname": {
			TEE: TEESim, Accel: AccelKVM, Guest: guest(dir + "/rootfs/sealpod/guest/firmware.fd"),
			AgentSocket: dir + "/agent.sock", SimSPSocket: dir + "/sim-sp.sock",
			NIC: &NIC{TapName: "tap0_sealpod", MAC: mac},
		},
		"snp": {
			TEE: TEESNP, Guest: guest(dir + "/rootfs/sealpod/guest/firmware.fd"), HostData: digest,
			AgentSocket: dir + "/agent.sock", NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true},
			QMPSocket: dir + "/qmp.sock",
		},
		"snp-milan": {
			TEE: TEESNP, Guest: func() Guest { g := guest(dir + "/fw.fd"); g.VCPUType = "EPYC-Milan"; return g }(),
			HostData: digest, AgentSocket: dir + "/agent.sock", SNP: SNPOptions{CBitPos: 47, ReducedPhysBits: 5},
		},
		"tdx-qgs-unix": {
			TEE: TEETDX, Guest: guest(dir + "/fw.fd"), HostData: digest, AgentSocket: dir + "/agent.sock",
			TDX: TDXOptions{QGS: "unix:/run/qgs/qgs.socket"},
		},
		"tdx": {
			TEE: TEETDX, Guest: guest(dir + "/rootfs/sealpod/guest/firmware.fd"), HostData: digest,
			AgentSocket: dir + "/agent.sock", NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true},
		},
		// As the shim launches a pod on an snp node (runtime-shim/shim TestHardwareNodeLaunch
		// compares its argv with this file): node config snpCBitPos 47, snpSMT false; the agent
		// socket and the tap passed as descriptors.
		"snp-node": {
			TEE: TEESNP, Accel: AccelKVM, Guest: guest(dir + "/rootfs/sealpod/guest/firmware.fd"), HostData: digest,
			AgentSocket: dir + "/agent.sock", AgentListener: tap, NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true},
			Name: "sealpod-p1", SNP: SNPOptions{CBitPos: 47, ReducedPhysBits: 1, Policy: SNPPolicyReserved},
		},
		// As the shim launches a pod on a tdx node: node config qgsSocket (default).
		"tdx-node": {
			TEE: TEETDX, Accel: AccelKVM, Guest: guest(dir + "/rootfs/sealpod/guest/firmware.fd"), HostData: digest,
			AgentSocket: dir + "/agent.sock", AgentListener: tap, NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true},
			Name: "sealpod-p1", TDX: TDXOptions{QGS: "unix:/var/run/tdx-qgs/qgs.socket"},
		},
		// As the shim launches a pod with two sealed volumes (sealpod.io/volumes): the QMP
		// socket passed as a descriptor after the tap, two empty root ports (hotplug.go).
		"sim-tcg-volumes": {
			TEE: TEESim, Guest: guest(""), AgentSocket: dir + "/agent.sock", SimSPSocket: dir + "/sim-sp.sock",
			AgentListener: tap, SimSPListener: tap, NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true}, Name: "sealpod-p1",
			QMPSocket: dir + "/qmp.sock", QMPListener: tap, HotplugSlots: 2,
		},
		"snp-node-volumes": {
			TEE: TEESNP, Accel: AccelKVM, Guest: guest(dir + "/rootfs/sealpod/guest/firmware.fd"), HostData: digest,
			AgentSocket: dir + "/agent.sock", AgentListener: tap, NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true},
			Name: "sealpod-p1", SNP: SNPOptions{CBitPos: 47, ReducedPhysBits: 1, Policy: SNPPolicyReserved},
			QMPSocket: dir + "/qmp.sock", QMPListener: tap, HotplugSlots: 2,
		},
		"tdx-node-volumes": {
			TEE: TEETDX, Accel: AccelKVM, Guest: guest(dir + "/rootfs/sealpod/guest/firmware.fd"), HostData: digest,
			AgentSocket: dir + "/agent.sock", AgentListener: tap, NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true},
			Name: "sealpod-p1", TDX: TDXOptions{QGS: "unix:/var/run/tdx-qgs/qgs.socket"},
			QMPSocket: dir + "/qmp.sock", QMPListener: tap, HotplugSlots: 2,
		},
		"pef": {
			TEE: TEEPEF, Guest: guest(""), AgentSocket: dir + "/agent.sock",
			NIC: &NIC{TapFile: tap, MAC: mac, VNetHdr: true},
		},
		// The ppc64le guest (guest.json arch ppc64le) under emulation: the pseries machine of
		// qemu-system-ppc64 with TCG (pseries.go); tests/guest TestBootPPC64LE boots it.
		"sim-tcg-ppc64le": {
			TEE: TEESim, Guest: func() Guest {
				g := guest("")
				g.Arch = bundle.ArchPPC64LE
				g.Cmdline = "console=hvc0 quiet panic=-1"
				return g
			}(),
			AgentSocket: dir + "/agent.sock", SimSPSocket: dir + "/sim-sp.sock", NIC: &NIC{User: true, MAC: UserNetMAC()},
		},
	}
}

func TestGolden(t *testing.T) {
	for name, cfg := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			cmd, err := cfg.Command()
			if err != nil {
				t.Fatal(err)
			}
			got := []byte(cmd.Path + "\n" + strings.Join(cmd.Args, "\n") + "\n")
			path := filepath.Join("testdata", name+".args")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the golden file:\n--- got ---\n%s--- want ---\n%s", path, got, want)
			}
			wantFiles := 0
			if cfg.NIC != nil && cfg.NIC.TapFile != nil {
				wantFiles = 1
			}
			for _, l := range []*os.File{cfg.AgentListener, cfg.SimSPListener, cfg.QMPListener} {
				if l != nil {
					wantFiles++
				}
			}
			if len(cmd.ExtraFiles) != wantFiles {
				t.Errorf("ExtraFiles: %d, want %d", len(cmd.ExtraFiles), wantFiles)
			}
		})
	}
}

// TestTEEOptions checks the facts the golden files encode, independently of their bytes.
func TestTEEOptions(t *testing.T) {
	cases := goldenCases(t)
	join := func(c Config) string {
		cmd, err := c.Command()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(cmd.Args, " ")
	}
	snp := join(cases["snp"])
	for _, want := range []string{
		"confidential-guest-support=sev0", "memory-backend=ram0", "memory-backend-memfd,id=ram0,size=512M",
		"sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on,host-data=",
		"-cpu EPYC-v4", "-bios /run/sealpod/p1/rootfs/sealpod/guest/firmware.fd", "accel=kvm",
	} {
		if !strings.Contains(snp, want) {
			t.Errorf("snp: %q missing in %s", want, snp)
		}
	}
	// host-data is exactly the 32-byte digest.
	i := strings.Index(snp, "host-data=") + len("host-data=")
	hd := strings.Fields(snp[i:])[0]
	if dec, err := decodeB64(hd); err != nil || !bytes.Equal(dec, digest) {
		t.Errorf("snp host-data %q decodes to %x, %v; want %x", hd, dec, err, digest)
	}
	// The shim's sim VM boots qboot; a bundle's firmware wins over it; no -bios otherwise.
	if fds := join(cases["sim-tcg-fds"]); !strings.Contains(fds, "-bios "+shimconfig.DefaultEmulatedBIOS+" ") {
		t.Errorf("sim-tcg-fds: no -bios %s in %s", shimconfig.DefaultEmulatedBIOS, fds)
	}
	withFW := cases["sim-tcg-fds"]
	withFW.Guest.Firmware = "/g/firmware.fd"
	if a := join(withFW); !strings.Contains(a, "-bios /g/firmware.fd ") || strings.Contains(a, shimconfig.DefaultEmulatedBIOS) {
		t.Errorf("sim with a bundle firmware: %s", a)
	}
	if a := join(cases["sim-tcg"]); strings.Contains(a, "-bios") {
		t.Errorf("sim-tcg without EmulatedBIOS has a -bios: %s", a)
	}
	tdx := join(cases["tdx"])
	for _, want := range []string{"q35,accel=kvm,kernel-irqchip=split,confidential-guest-support=tdx0", "-cpu host",
		`"quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}`} {
		if !strings.Contains(tdx, want) {
			t.Errorf("tdx: %q missing in %s", want, tdx)
		}
	}
	tdxCmd, _ := func() (*Command, error) { c := cases["tdx"]; return c.Command() }()
	var obj struct {
		QOMType       string `json:"qom-type"`
		ID            string `json:"id"`
		SeptVEDisable bool   `json:"sept-ve-disable"`
		MRConfigID    string `json:"mrconfigid"`
	}
	for i, a := range tdxCmd.Args {
		if a == "-object" && strings.HasPrefix(tdxCmd.Args[i+1], "{") {
			if err := json.Unmarshal([]byte(tdxCmd.Args[i+1]), &obj); err != nil {
				t.Fatal(err)
			}
		}
	}
	if obj.QOMType != "tdx-guest" || obj.ID != "tdx0" || !obj.SeptVEDisable {
		t.Errorf("tdx-guest object %+v", obj)
	}
	id, err := decodeB64(obj.MRConfigID)
	if err != nil || len(id) != MRConfigIDSize || !bytes.Equal(id[:32], digest) || !bytes.Equal(id[32:], make([]byte, 16)) {
		t.Errorf("tdx mrconfigid = %x (%v), want the digest zero-padded to 48 bytes", id, err)
	}
	pef := join(cases["pef"])
	if !strings.Contains(pef, "pseries,accel=kvm,confidential-guest-support=pef0") || !strings.Contains(pef, "pef-guest,id=pef0") {
		t.Errorf("pef: %s", pef)
	}
	sim := join(cases["sim-tcg"])
	for _, want := range []string{"-machine q35 -accel tcg,tb-size=", "-cpu max", "name=" + AgentPortName, "name=" + SimSPPortName,
		"tap,id=net0,vhost=off,fd=3", "mac=0a:58:0a:f4:00:07", "virtio-rng-pci", "-no-reboot"} {
		if !strings.Contains(sim, want) {
			t.Errorf("sim: %q missing in %s", want, sim)
		}
	}
	for _, bad := range []string{"sev", "tdx", "-bios"} {
		if strings.Contains(sim, bad) {
			t.Errorf("sim: unexpected %q in %s", bad, sim)
		}
	}
	// User-mode networking (the guest suite's and the shim's network "user"): slirp, QEMU's
	// default guest MAC, no tap and no inherited descriptor.
	user := join(cases["sim-tcg-usernet"])
	if !strings.Contains(user, "-netdev user,id=net0 -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=") ||
		strings.Contains(user, "tap") || strings.Contains(user, "fd=") {
		t.Errorf("sim-tcg-usernet: %s", user)
	}
	// Descriptors: the agent and sim-sp listeners come first (fd 3, 4), then the tap.
	fds := join(cases["sim-tcg-fds"])
	for _, want := range []string{"socket,id=port0,fd=3,server=on,wait=off", "socket,id=port1,fd=4,server=on,wait=off", "tap,id=net0,vhost=off,fd=5"} {
		if !strings.Contains(fds, want) {
			t.Errorf("sim-tcg-fds: %q missing in %s", want, fds)
		}
	}
	if strings.Contains(fds, "path=") {
		t.Errorf("sim-tcg-fds: a socket path on the command line: %s", fds)
	}
	noSandbox := cases["sim-tcg"]
	noSandbox.InsecureNoSandbox = true
	if strings.Contains(join(noSandbox), "-sandbox") {
		t.Error("InsecureNoSandbox kept -sandbox")
	}
}

func TestPortNamesMatchAgent(t *testing.T) {
	if SimSPPortName != simsp.PortName {
		t.Fatalf("SimSPPortName %q != agent/simsp.PortName %q", SimSPPortName, simsp.PortName)
	}
}

func TestGuestFromBundle(t *testing.T) {
	b := &bundle.Bundle{Dir: "/x/guest", Config: bundle.Config{Cmdline: "c", VCPUs: 1, MemoryMiB: 512, VCPUType: "EPYC-Genoa"}, Initrd: []byte("i")}
	g := GuestFromBundle(b)
	want := Guest{Kernel: "/x/guest/vmlinuz", Initrd: "/x/guest/initrd.img", Cmdline: "c", VCPUs: 1, MemoryMiB: 512, VCPUType: "EPYC-Genoa"}
	if g != want {
		t.Fatalf("got %+v, want %+v", g, want)
	}
	// An empty initrd is no initrd, as the measurement counts it (measure.BundleInputs).
	b.Initrd = nil
	if g := GuestFromBundle(b); g.Initrd != "" {
		t.Fatalf("empty initrd booted as %q", g.Initrd)
	}
	b.Firmware = []byte{1}
	if g := GuestFromBundle(b); g.Firmware != "/x/guest/firmware.fd" {
		t.Fatalf("firmware path %q", g.Firmware)
	}
	// guest.json's arch picks the machine (pseries for ppc64le).
	b.Config.Arch = bundle.ArchPPC64LE
	if g := GuestFromBundle(b); g.Arch != bundle.ArchPPC64LE {
		t.Fatalf("arch %q, want %q", g.Arch, bundle.ArchPPC64LE)
	}
}

func TestRefusals(t *testing.T) {
	ok := func() Config {
		return Config{TEE: TEESim, Guest: guest(""), AgentSocket: "/r/a.sock", SimSPSocket: "/r/s.sock"}
	}
	if _, err := func() (*Command, error) { c := ok(); return c.Command() }(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	long := "/" + strings.Repeat("s", MaxSocketPath)
	cases := []struct {
		name, field string
		mod         func(*Config)
	}{
		{"no TEE", "TEE", func(c *Config) { c.TEE = "" }},
		{"unknown TEE", "TEE", func(c *Config) { c.TEE = "sgx" }},
		{"snp on tcg", "Accel", func(c *Config) { c.TEE, c.Accel, c.SimSPSocket, c.HostData = TEESNP, AccelTCG, "", digest }},
		{"bad accel", "Accel", func(c *Config) { c.Accel = "hvf" }},
		{"no kernel", "Guest.Kernel", func(c *Config) { c.Guest.Kernel = "" }},
		{"zero vcpus", "Guest.VCPUs", func(c *Config) { c.Guest.VCPUs = 0 }},
		{"tiny memory", "Guest.MemoryMiB", func(c *Config) { c.Guest.MemoryMiB = 16 }},
		{"comma in kernel", "Guest.Kernel", func(c *Config) { c.Guest.Kernel = "/a,b" }},
		{"newline in cmdline", "Guest.Cmdline", func(c *Config) { c.Guest.Cmdline = "a\nb" }},
		{"comma in cpu", "CPU", func(c *Config) { c.CPU = "max,+sgx" }},
		{"no agent socket", "AgentSocket", func(c *Config) { c.AgentSocket = "" }},
		{"long agent socket", "AgentSocket", func(c *Config) { c.AgentSocket = long }},
		{"comma in socket", "AgentSocket", func(c *Config) { c.AgentSocket = "/r/a,server=off" }},
		{"sim without sim-sp", "SimSPSocket", func(c *Config) { c.SimSPSocket = "" }},
		{"sim-tdx without sim-sp", "SimSPSocket", func(c *Config) { c.TEE, c.SimSPSocket = TEESimTDX, "" }},
		{"tdx with sim-sp", "SimSPSocket", func(c *Config) { c.TEE, c.HostData, c.Guest.Firmware = TEETDX, digest, "/fw" }},
		{"tdx on tcg", "Accel", func(c *Config) {
			c.TEE, c.Accel, c.SimSPSocket, c.HostData, c.Guest.Firmware = TEETDX, AccelTCG, "", digest, "/fw"
		}},
		{"same socket twice", "SimSPSocket", func(c *Config) { c.SimSPSocket = c.AgentSocket }},
		{"unknown guest arch", "Guest.Arch", func(c *Config) { c.Guest.Arch = "riscv64" }},
		{"ppc64le under sim-tdx", "Guest.Arch", func(c *Config) { c.TEE, c.Guest.Arch = TEESimTDX, bundle.ArchPPC64LE }},
		{"x86 under sim-pef", "Guest.Arch", func(c *Config) { c.TEE = TEESimPEF }},
		{"sim-pef without sim-sp", "SimSPSocket", func(c *Config) { c.TEE, c.Guest.Arch, c.SimSPSocket = TEESimPEF, bundle.ArchPPC64LE, "" }},
		{"ppc64le under snp", "Guest.Arch", func(c *Config) {
			c.TEE, c.Accel, c.SimSPSocket, c.HostData, c.Guest.Firmware, c.Guest.Arch = TEESNP, "", "", digest, "/fw", bundle.ArchPPC64LE
		}},
		{"ppc64le with hot-plug ports", "HotplugSlots", func(c *Config) { c.Guest.Arch, c.HotplugSlots = bundle.ArchPPC64LE, 1 }},
		{"snp with sim-sp", "SimSPSocket", func(c *Config) { c.TEE, c.Accel, c.HostData, c.Guest.Firmware = TEESNP, "", digest, "/fw" }},
		{"snp without host data", "HostData", func(c *Config) { c.TEE, c.SimSPSocket, c.Guest.Firmware = TEESNP, "", "/fw" }},
		{"tdx short host data", "HostData", func(c *Config) { c.TEE, c.SimSPSocket, c.HostData, c.Guest.Firmware = TEETDX, "", digest[:20], "/fw" }},
		{"snp without firmware", "Guest.Firmware", func(c *Config) { c.TEE, c.SimSPSocket, c.HostData = TEESNP, "", digest }},
		{"snp debug policy", "SNP.Policy", func(c *Config) {
			c.TEE, c.SimSPSocket, c.HostData, c.Guest.Firmware, c.SNP.Policy = TEESNP, "", digest, "/fw", 0x30000|1<<19
		}},
		{"tdx bad qgs", "TDX.QGS", func(c *Config) {
			c.TEE, c.SimSPSocket, c.HostData, c.Guest.Firmware, c.TDX.QGS = TEETDX, "", digest, "/fw", "tcp:1.2.3.4:5"
		}},
		{"tdx bad qgs vsock", "TDX.QGS", func(c *Config) {
			c.TEE, c.SimSPSocket, c.HostData, c.Guest.Firmware, c.TDX.QGS = TEETDX, "", digest, "/fw", "vsock:2"
		}},
		{"duplicate port", "port", func(c *Config) { c.Ports = []Port{{Name: AgentPortName, Socket: "/r/x.sock"}} }},
		{"nic without tap", "NIC", func(c *Config) { c.NIC = &NIC{MAC: mac} }},
		{"nic user with tap file", "NIC.User", func(c *Config) { c.NIC = &NIC{User: true, TapFile: os.Stdin, MAC: mac} }},
		{"nic user with tap name", "NIC.User", func(c *Config) { c.NIC = &NIC{User: true, TapName: "t", MAC: mac} }},
		{"nic user bad mac", "NIC.MAC", func(c *Config) { c.NIC = &NIC{User: true} }},
		{"nic bad mac", "NIC.MAC", func(c *Config) { c.NIC = &NIC{TapName: "t", MAC: mac[:4]} }},
		{"nic multicast mac", "NIC.MAC", func(c *Config) { c.NIC = &NIC{TapName: "t", MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}} }},
		{"nic long tap name", "NIC.TapName", func(c *Config) { c.NIC = &NIC{TapName: "tap0123456789abcdef", MAC: mac} }},
		{"long qmp socket", "QMPSocket", func(c *Config) { c.QMPSocket = long }},
		{"NUL in extra arg", "ExtraArgs[0]", func(c *Config) { c.ExtraArgs = []string{"a\x00b"} }},
		{"tb-size with kvm", "TBSizeMiB", func(c *Config) { c.Accel, c.TBSizeMiB = AccelKVM, 32 }},
		{"tb-size on snp", "TBSizeMiB", func(c *Config) {
			c.TEE, c.SimSPSocket, c.HostData, c.Guest.Firmware, c.TBSizeMiB = TEESNP, "", digest, "/fw", 32
		}},
		{"negative tb-size", "TBSizeMiB", func(c *Config) { c.TBSizeMiB = -1 }},
		{"emulated bios on snp", "EmulatedBIOS", func(c *Config) {
			c.TEE, c.SimSPSocket, c.HostData, c.Guest.Firmware, c.EmulatedBIOS = TEESNP, "", digest, "/fw", shimconfig.DefaultEmulatedBIOS
		}},
		{"emulated bios on tdx", "EmulatedBIOS", func(c *Config) {
			c.TEE, c.SimSPSocket, c.HostData, c.Guest.Firmware, c.EmulatedBIOS = TEETDX, "", digest, "/fw", shimconfig.DefaultEmulatedBIOS
		}},
		{"emulated bios on pseries", "EmulatedBIOS", func(c *Config) { c.Guest.Arch, c.EmulatedBIOS = "ppc64le", shimconfig.DefaultEmulatedBIOS }},
		{"emulated bios with comma", "EmulatedBIOS", func(c *Config) { c.EmulatedBIOS = "/a,b" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mod(&c)
			_, err := c.Command()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

// FuzzConfig feeds arbitrary strings into every free-form field: Command must never panic,
// and whatever it accepts must not let a value start a new QEMU option (no comma outside the
// ones we put, no NUL/newline anywhere).
func FuzzConfig(f *testing.F) {
	f.Add("/k", "/i", "console=ttyS0", "/a.sock", "/s.sock", "tap0", "max", "sim", 1, 512)
	f.Add("/k,x", "", "", "", "", "", "", "snp", 0, 0)
	f.Add("/k", "/i\n", "a\x00", "/a", "/a", "t,ap", "host", "tdx", 2, 1<<20)
	f.Fuzz(func(t *testing.T, kernel, initrd, cmdline, agent, simSP, tap, cpu, tee string, vcpus, mem int) {
		c := Config{TEE: TEE(tee), Guest: Guest{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, VCPUs: vcpus, MemoryMiB: mem},
			AgentSocket: agent, SimSPSocket: simSP, CPU: cpu, HostData: digest, NIC: &NIC{TapName: tap, MAC: mac}}
		cmd, err := c.Command()
		if err != nil {
			return
		}
		for _, a := range cmd.Args {
			if strings.ContainsAny(a, "\x00\n") {
				t.Fatalf("accepted argument with NUL/newline: %q", a)
			}
		}
		for _, v := range []string{kernel, initrd, agent, simSP, tap, cpu} {
			if strings.Contains(v, ",") {
				t.Fatalf("accepted a comma in %q", v)
			}
		}
	})
}

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

// BenchmarkCommand is the cost of building a full sim command line (the shim does it once per
// pod, before QEMU's seconds-long boot).
func BenchmarkCommand(b *testing.B) {
	tap, err := os.Open(os.DevNull)
	if err != nil {
		b.Fatal(err)
	}
	defer tap.Close()
	c := Config{TEE: TEESim, Guest: guest(""), AgentSocket: "/run/sealpod/p1/agent.sock", SimSPSocket: "/run/sealpod/p1/sp.sock",
		NIC: &NIC{TapFile: tap, MAC: mac}, QMPSocket: "/run/sealpod/p1/qmp.sock", PIDFile: "/run/sealpod/p1/qemu.pid"}
	for b.Loop() {
		if _, err := c.Command(); err != nil {
			b.Fatal(err)
		}
	}
}

// sandboxArg is QEMU's seccomp sandbox as every pod VM runs it (issue 12).
const sandboxArg = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// TestCommandConfined: every command line runs QEMU under its seccomp sandbox: no obsolete
// system calls, no set*uid, no fork/exec, no scheduler or resource changes.
func TestCommandConfined(t *testing.T) {
	for name, cfg := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			cmd, err := cfg.Command()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for i, a := range cmd.Args {
				if a == "-sandbox" {
					n++
					if i+1 >= len(cmd.Args) || cmd.Args[i+1] != sandboxArg {
						t.Errorf("-sandbox %q, want %q", cmd.Args[i+1:], sandboxArg)
					}
				}
			}
			if n != 1 {
				t.Errorf("%d -sandbox options in %q, want 1", n, cmd.Args)
			}
		})
	}
}

// TestMemoryOptions: emulated guests get a bounded TCG translation cache and a virtio-balloon
// with free page reporting; confidential command lines (snp, tdx, pef) get neither, and a
// kvm guest never gets a TCG option.
func TestMemoryOptions(t *testing.T) {
	for name, cfg := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			cmd, err := cfg.Command()
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Join(cmd.Args, " ")
			tcg := cfg.TEE == TEESim && (cfg.Accel == "" || cfg.Accel == AccelTCG)
			if got, want := strings.Contains(args, "-accel tcg,tb-size=32"), tcg; got != want {
				t.Errorf("tb-size on the command line: %v, want %v: %s", got, want, args)
			}
			if !tcg && strings.Contains(args, "tb-size") {
				t.Errorf("a TCG option on a %s/%s command line: %s", cfg.TEE, cfg.Accel, args)
			}
			if tcg && strings.Contains(args, "accel=tcg") {
				t.Errorf("-machine accel= next to -accel (QEMU refuses both): %s", args)
			}
			balloon := strings.Contains(args, "-device virtio-balloon-pci,id=balloon0,free-page-reporting=on")
			if balloon != (cfg.TEE == TEESim) || (cfg.TEE != TEESim && strings.Contains(args, "balloon")) {
				t.Errorf("balloon %v for %s: %s", balloon, cfg.TEE, args)
			}
		})
	}
}

// TestSimPEFIsTheEmulatedPseries: a sim-pef VM is the emulated ppc64le VM of the golden
// sim-tcg-ppc64le case, argument for argument (the node plays the ultravisor on the sim-sp
// port; QEMU emulates no PEF).
func TestSimPEFIsTheEmulatedPseries(t *testing.T) {
	c := goldenCases(t)["sim-tcg-ppc64le"]
	want, err := c.Command()
	if err != nil {
		t.Fatal(err)
	}
	c.TEE = TEESimPEF
	got, err := c.Command()
	if err != nil {
		t.Fatalf("sim-pef: %v", err)
	}
	if got.Path != BinaryPPC64 || !slices.Equal(got.Args, want.Args) {
		t.Fatalf("sim-pef: %s %q\nwant %s %q", got.Path, got.Args, want.Path, want.Args)
	}
}
