package bundle

import (
	"errors"
	"testing"
)

func TestSizeFor(t *testing.T) {
	const mi = 1 << 20
	cases := []struct {
		name string
		l    Limits
		dflt Size
		want Size
		err  error
	}{
		{"no limits", Limits{}, Size{}, Size{VCPUs: DefaultVCPUs, MemoryMiB: DefaultMemoryMiB}, nil},
		{"no limits, own defaults", Limits{}, Size{VCPUs: 2, MemoryMiB: 384}, Size{VCPUs: 2, MemoryMiB: 384}, nil},
		{"100Mi", Limits{MemoryBytes: 100 * mi}, Size{}, Size{VCPUs: 1, MemoryMiB: 224}, nil},
		{"exactly a step", Limits{MemoryBytes: 128 * mi}, Size{}, Size{VCPUs: 1, MemoryMiB: 224}, nil},
		{"a byte over a MiB rounds up", Limits{MemoryBytes: 128*mi + 1}, Size{}, Size{VCPUs: 1, MemoryMiB: 256}, nil},
		{"smallest limit", Limits{MemoryBytes: (MinMemoryMiB - OverheadMiB) * mi}, Size{}, Size{VCPUs: 1, MemoryMiB: MinMemoryMiB}, nil},
		{"below the floor", Limits{MemoryBytes: (MinMemoryMiB-OverheadMiB)*mi - 1}, Size{}, Size{}, ErrLimitTooSmall},
		{"1 CPU", Limits{MilliCPU: 1000}, Size{}, Size{VCPUs: 1, MemoryMiB: DefaultMemoryMiB}, nil},
		{"1001m", Limits{MilliCPU: 1001}, Size{}, Size{VCPUs: 2, MemoryMiB: DefaultMemoryMiB}, nil},
		{"100m", Limits{MilliCPU: 100}, Size{VCPUs: 4}, Size{VCPUs: 1, MemoryMiB: DefaultMemoryMiB}, nil},
		{"capped", Limits{MilliCPU: 1 << 40}, Size{}, Size{VCPUs: MaxVCPUs, MemoryMiB: DefaultMemoryMiB}, nil},
		{"huge memory", Limits{MemoryBytes: 1 << 62}, Size{}, Size{}, errAny},
		{"negative", Limits{MemoryBytes: -1}, Size{}, Size{}, errAny},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SizeFor(tc.l, tc.dflt)
			switch {
			case tc.err == errAny && err != nil:
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Fatalf("err %v, want %v", err, tc.err)
			case tc.err == nil && err != nil:
				t.Fatal(err)
			case tc.err == nil && got != tc.want:
				t.Fatalf("%+v, want %+v", got, tc.want)
			}
			if err == nil {
				c := Config{Version: Version, VCPUs: got.VCPUs, MemoryMiB: got.MemoryMiB}
				if err := c.Validate(); err != nil {
					t.Errorf("sized guest.json invalid: %v", err)
				}
				if got.MemoryMiB%MemoryStepMiB != 0 {
					t.Errorf("memory %d not a multiple of %d", got.MemoryMiB, MemoryStepMiB)
				}
			}
		})
	}
}

var errAny = errors.New("any error")

// FuzzSizeFor: any limits: no panic; an accepted size is a valid guest.json size that holds
// the limit plus the overhead.
func FuzzSizeFor(f *testing.F) {
	f.Add(int64(100<<20), int64(1500))
	f.Add(int64(0), int64(0))
	f.Add(int64(1<<63-1), int64(1<<63-1))
	f.Fuzz(func(t *testing.T, mem, cpu int64) {
		s, err := SizeFor(Limits{MemoryBytes: mem, MilliCPU: cpu}, Size{})
		if err != nil {
			return
		}
		c := Config{Version: Version, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB}
		if err := c.Validate(); err != nil {
			t.Fatalf("limits %d/%d: %v", mem, cpu, err)
		}
		if mem > 0 && MaxMemoryMiBFor(mem) < int64(s.MemoryMiB) {
			t.Fatalf("limit %d: sealed %d MiB, more than the shim allows (%d)", mem, s.MemoryMiB, MaxMemoryMiBFor(mem))
		}
		if mem > 0 && int64(s.MemoryMiB)<<20 < mem+OverheadMiB<<20 {
			t.Fatalf("limit %d: guest %d MiB does not hold it plus the overhead", mem, s.MemoryMiB)
		}
		if cpu > 0 && int64(s.VCPUs)*1000 < cpu && s.VCPUs != MaxVCPUs {
			t.Fatalf("cpu %dm: %d vCPUs", cpu, s.VCPUs)
		}
	})
}
