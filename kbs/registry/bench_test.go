package registry_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/sealpod/sealpod/kbs/registry"
)

// BenchmarkRegistryGet measures Get (bolt read transaction + decryption + JSON decoding) of
// one of 1,000 registered workloads, from parallel goroutines.
func BenchmarkRegistryGet(b *testing.B) {
	ctx := context.Background()
	reg := registry.New(openBolt(b), newSigner(b))
	const n = 1000
	for i := range n {
		if _, err := reg.Put(ctx, validWorkload(fmt.Sprintf("w-%d", i)), "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := reg.Get(ctx, fmt.Sprintf("w-%d", i%n)); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// BenchmarkRegistryPut measures one durable registration (validation, signed history entry,
// fsynced bolt commit).
func BenchmarkRegistryPut(b *testing.B) {
	ctx := context.Background()
	reg := registry.New(openBolt(b), newSigner(b))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := reg.Put(ctx, validWorkload(fmt.Sprintf("w-%d", i%100)), "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
