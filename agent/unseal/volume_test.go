package unseal_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/simtee/spserver"
)

// volumeSpec is testSpec with one encrypted volume mounted by the app container.
func volumeSpec(workload string) *spec.Spec {
	sp := testSpec(workload)
	sp.Volumes = []spec.Volume{{Name: "data", Kind: spec.VolumeEncrypted, Claim: &spec.Claim{
		Namespace: "default", ClaimName: "data-claim", Mode: spec.VolumeModeFilesystem, SizeBytes: spec.MinVolumeBytes}}}
	sp.Containers[0].Mounts = []spec.Mount{{Volume: "data", Path: "/data"}}
	return sp
}

// unsealWith runs Unseal for sealed at b with a correct sim launch.
func unsealWith(t *testing.T, b *brokertest.Broker, sealed *brokertest.Sealed) (*unseal.Result, error) {
	t.Helper()
	guest, host := socketpair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go spserver.Serve(ctx, host, b.Signer, spserver.Launch{Measurement: b.Measurement, HostData: digestBytes(sealed.Envelope)}, nil)
	return unseal.Unseal(ctx, sealed.Envelope, unseal.NewSimAttester(guest), unseal.Options{RetryFor: -1})
}

// A sealed spec with encrypted volumes keeps, from the attest answer, the broker's volume
// secret (the same at every unseal of the workload) and the session token, with which the
// volume generation calls work; a spec without encrypted volumes keeps nothing. (A broker
// that releases no secret: TestVolumeAccess.)
func TestUnsealKeepsVolumeAccess(t *testing.T) {
	b := brokertest.Start(t)
	if res, err := unsealWith(t, b, b.Seal(t, testSpec("plain"), []string{"plain.default.svc"})); err != nil {
		t.Fatalf("unseal without volumes: %v", err)
	} else if res.Volumes != nil {
		t.Fatalf("unseal without encrypted volumes keeps volume access %+v", res.Volumes)
	}
	sealed := b.Seal(t, volumeSpec("vols"), []string{"vols.default.svc"})
	res, err := unsealWith(t, b, sealed)
	if err != nil {
		t.Fatalf("unseal of a spec with encrypted volumes: %v", err)
	}
	va := res.Volumes
	if va == nil || len(va.Secret) != 32 || va.Token == "" || va.Broker == nil || !va.ExpiresAt.After(time.Now()) {
		t.Fatalf("volume access %+v: want a 32-byte secret, a live token and the broker", va)
	}
	ctx := context.Background()
	c, p, err := va.Broker.VolumeBegin(ctx, va.Token, "default/data-claim")
	if err != nil || c != 0 || p != 1 {
		t.Fatalf("VolumeBegin with the kept token = %d, %d, %v; want 0, 1", c, p, err)
	}
	if err := va.Broker.VolumeCommit(ctx, va.Token, "default/data-claim", p); err != nil {
		t.Fatalf("VolumeCommit with the kept token: %v", err)
	}
	again, err := unsealWith(t, b, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Volumes.Secret, va.Secret) {
		t.Fatal("the volume secret differs between two unseals of the same workload")
	}
	if c, _, err := again.Volumes.Broker.VolumeBegin(ctx, again.Volumes.Token, "default/data-claim"); err != nil || c != 1 {
		t.Fatalf("VolumeBegin after a commit = %d, %v; want committed 1", c, err)
	}
}
