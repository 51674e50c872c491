// Package hostinfo describes the machine a benchmark runs on, for its report.
package hostinfo

import (
	"os"
	"strings"
)

// LoadAvg is the 1, 5 and 15 minute load averages of /proc/loadavg ("0.80 1.10 1.20"), or
// "unknown".
func LoadAvg() string { return loadAvg("/proc/loadavg") }

func loadAvg(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
