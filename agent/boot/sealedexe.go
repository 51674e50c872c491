package boot

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer/exeseal"
	"golang.org/x/sys/unix"
)

// The agent runs from a sealed memfd (RunFromSealedCopy): libcontainer starts every
// container init and every exec ("runc init") from the agent's own binary, and unless that
// binary is a sealed memfd it copies the whole binary (14 MB) into a fresh memfd first, for
// each exec (the CVE-2019-5736 protection). Under emulation a fresh copy also means fresh
// physical pages, so QEMU retranslates all of runc init's code for every exec probe: >1 s per
// probe, past the kubelet's default 1 s probe timeout. Run from one sealed copy, the agent's
// execs map the same pages every time (docs/agent.md "Boot").

// sealedStageEnv carries the first stage's timings to the second (informational only: the
// stage is decided by exeseal.IsSelfExeCloned, which the environment cannot fake).
const sealedStageEnv = "_SEALPOD_AGENT_STAGE1"

// RunningFromSealedCopy reports whether this process runs from a sealed memfd (the second
// stage of RunFromSealedCopy, or the copy agent/boot/preinit made before the Go runtime
// started), with the first stage's start uptime and root switch if it passed them. When /proc
// is not mounted (the C first stage mounts nothing) it mounts it to look and unmounts it
// again, so that boot.LeaveInitramfs still finds "/" as the kernel left it.
func RunningFromSealedCopy() (start time.Duration, sw RootSwitch, ok bool) {
	if !procMounted() {
		if err := mountProc(); err != nil {
			return 0, RootSwitch{}, false
		}
		cloned := exeseal.IsSelfExeCloned()
		if err := unix.Unmount("/proc", 0); err != nil || !cloned {
			return 0, RootSwitch{}, false
		}
		_ = os.Unsetenv(sealedStageEnv) // a Go first stage never ran: anything here is the host's
		return 0, RootSwitch{}, true
	}
	if !exeseal.IsSelfExeCloned() {
		return 0, RootSwitch{}, false
	}
	f := strings.Split(os.Getenv(sealedStageEnv), ",")
	_ = os.Unsetenv(sealedStageEnv)
	if len(f) != 5 {
		return 0, RootSwitch{}, true
	}
	n := make([]int64, len(f))
	for i, s := range f {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return 0, RootSwitch{}, true
		}
		n[i] = v
	}
	return time.Duration(n[0]), RootSwitch{Switched: n[1] == 1, Duration: time.Duration(n[2]), Bytes: n[3], Files: int(n[4])}, true
}

// RunFromSealedCopy copies the running binary into a sealed memfd and executes it with the
// same arguments; it returns only on failure. start and sw are handed to the second stage.
func RunFromSealedCopy(start time.Duration, sw RootSwitch) error {
	if err := mountProc(); err != nil {
		return fmt.Errorf("sealed copy of the agent: %w", err)
	}
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("sealed copy of the agent: %w", err)
	}
	st, err := exe.Stat()
	if err != nil {
		exe.Close()
		return fmt.Errorf("sealed copy of the agent: %w", err)
	}
	sealed, err := exeseal.CloneBinary(exe, st.Size(), "sealpod-agent", os.TempDir())
	exe.Close()
	if err != nil {
		return fmt.Errorf("sealed copy of the agent: %w", err)
	}
	if !exeseal.IsCloned(sealed) {
		sealed.Close()
		return errors.New("sealed copy of the agent: not a sealed memfd")
	}
	switched := 0
	if sw.Switched {
		switched = 1
	}
	env := append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d,%d,%d", sealedStageEnv, start, switched, sw.Duration, sw.Bytes, sw.Files))
	err = unix.Exec("/proc/self/fd/"+strconv.Itoa(int(sealed.Fd())), os.Args, env)
	sealed.Close()
	return fmt.Errorf("sealed copy of the agent: exec: %w", err)
}
