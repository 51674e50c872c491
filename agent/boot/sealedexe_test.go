package boot

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRunFromSealedCopy runs this test binary as a stand-in agent: the first stage calls
// RunFromSealedCopy, the process comes back running from a sealed memfd and reports what
// RunningFromSealedCopy saw. Without the re-exec (or with an unsealed copy) the second stage
// never reports.
func TestRunFromSealedCopy(t *testing.T) {
	if os.Getenv("SEALPOD_TEST_SEALED_STAGE") == "1" {
		start, sw, ok := RunningFromSealedCopy()
		if ok {
			fmt.Printf("second stage: start=%v switched=%v files=%d bytes=%d\n", start, sw.Switched, sw.Files, sw.Bytes)
			os.Exit(0)
		}
		fmt.Println("first stage")
		err := RunFromSealedCopy(1234*time.Millisecond, RootSwitch{Switched: true, Duration: time.Millisecond, Bytes: 42, Files: 7})
		fmt.Println("RunFromSealedCopy returned:", err)
		os.Exit(1)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunFromSealedCopy$")
	cmd.Env = append(os.Environ(), "SEALPOD_TEST_SEALED_STAGE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("stand-in agent: %v\n%s", err, out)
	}
	want := "first stage\nsecond stage: start=1.234s switched=true files=7 bytes=42\n"
	if !strings.HasPrefix(string(out), want) {
		t.Fatalf("stand-in agent printed\n%s\nwant it to start with\n%s", out, want)
	}
	if _, _, ok := RunningFromSealedCopy(); ok {
		t.Fatal("the test binary itself reported running from a sealed copy")
	}
}
