package unseal

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

func TestVolumeAccess(t *testing.T) {
	withVolume := &spec.Spec{Volumes: []spec.Volume{{Name: "cache", Kind: spec.VolumeTmpfs}, {Name: "data", Kind: spec.VolumeEncrypted}}}
	without := &spec.Spec{Volumes: []spec.Volume{{Name: "cache", Kind: spec.VolumeTmpfs}}}
	secret := bytes.Repeat([]byte{7}, 32)
	exp := time.Unix(1e9, 0)
	for _, tc := range []struct {
		name    string
		sp      *spec.Spec
		secret  []byte
		token   string
		wantErr bool
		keep    bool
	}{
		{name: "no encrypted volume: nothing kept", sp: without, secret: secret, token: "tok"},
		{name: "encrypted volume: secret and token kept", sp: withVolume, secret: secret, token: "tok", keep: true},
		{name: "no secret", sp: withVolume, token: "tok", wantErr: true},
		{name: "short secret", sp: withVolume, secret: secret[:31], token: "tok", wantErr: true},
		{name: "no token", sp: withVolume, secret: secret, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := bytes.Clone(tc.secret)
			va, err := volumeAccess(tc.sp, in, tc.token, exp, nil)
			if tc.wantErr {
				if !errors.Is(err, ErrNoVolumeSecret) {
					t.Fatalf("volumeAccess: %v, want ErrNoVolumeSecret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.keep {
				if va != nil {
					t.Fatalf("kept %+v for a spec without encrypted volumes", va)
				}
				return
			}
			if !bytes.Equal(va.Secret, secret) || va.Token != tc.token || !va.ExpiresAt.Equal(exp) {
				t.Fatalf("kept %+v", va)
			}
			clear(in) // the caller clears the release's copy
			if !bytes.Equal(va.Secret, secret) {
				t.Fatal("the kept secret aliases the release's")
			}
			va.Wipe()
			if va.Secret != nil {
				t.Fatal("Wipe left the secret")
			}
		})
	}
}
