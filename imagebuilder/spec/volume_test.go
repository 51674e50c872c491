package spec

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// goodClaim is a valid claim of each shape, for tables that change one field.
func goodClaim(shape string) Claim {
	c := Claim{Namespace: "prod", Mode: VolumeModeFilesystem, SizeBytes: 1 << 30}
	switch shape {
	case "pvc":
		c.ClaimName = "data-pvc"
	case "template":
		c.Template, c.StatefulSet = "data", "db"
	case "ephemeral":
		c.Ephemeral = true
	}
	return c
}

func TestClaimValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Claim)
		shape  string
		want   string // "" = valid
	}{
		{name: "claim name", shape: "pvc"},
		{name: "template", shape: "template"},
		{name: "ephemeral", shape: "ephemeral"},
		{name: "block, read-only, smallest", shape: "pvc", change: func(c *Claim) { c.Mode, c.ReadOnly, c.SizeBytes = VolumeModeBlock, true, MinVolumeBytes }},
		{name: "largest", shape: "pvc", change: func(c *Claim) { c.SizeBytes = MaxVolumeBytes }},
		{name: "no namespace", shape: "pvc", change: func(c *Claim) { c.Namespace = "" }, want: "claim.namespace"},
		{name: "namespace not a label", shape: "pvc", change: func(c *Claim) { c.Namespace = "a.b" }, want: "claim.namespace"},
		{name: "claim name with a slash", shape: "pvc", change: func(c *Claim) { c.ClaimName = "a/b" }, want: "claim.claimName"},
		{name: "claim name upper case", shape: "pvc", change: func(c *Claim) { c.ClaimName = "Data" }, want: "claim.claimName"},
		{name: "template without statefulSet", shape: "template", change: func(c *Claim) { c.StatefulSet = "" }, want: "claim.template"},
		{name: "statefulSet without template", shape: "template", change: func(c *Claim) { c.Template = "" }, want: "claim.template"},
		{name: "none", shape: "", want: "exactly one of claimName, template+statefulSet or ephemeral, got 0"},
		{name: "claim name and ephemeral", shape: "pvc", change: func(c *Claim) { c.Ephemeral = true }, want: "got 2"},
		{name: "claim name and template", shape: "pvc", change: func(c *Claim) { c.Template, c.StatefulSet = "t", "s" }, want: "got 2"},
		{name: "no mode", shape: "pvc", change: func(c *Claim) { c.Mode = "" }, want: "claim.mode"},
		{name: "lower-case mode", shape: "pvc", change: func(c *Claim) { c.Mode = "block" }, want: "claim.mode"},
		{name: "too small", shape: "pvc", change: func(c *Claim) { c.SizeBytes = MinVolumeBytes - 1 }, want: "claim.sizeBytes"},
		{name: "too large", shape: "pvc", change: func(c *Claim) { c.SizeBytes = MaxVolumeBytes + 1 }, want: "claim.sizeBytes"},
		{name: "negative", shape: "pvc", change: func(c *Claim) { c.SizeBytes = -1 }, want: "claim.sizeBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodClaim(tt.shape)
			if tt.change != nil {
				tt.change(&c)
			}
			err := c.Validate("data")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "volume data: ") {
				t.Fatalf("err = %v, want one naming volume data and %q", err, tt.want)
			}
		})
	}
}

func TestClaimForAndIdentity(t *testing.T) {
	tests := []struct {
		name, shape, pod, vol string
		want                  string // the claim name; "" = error
		wantErr               string
	}{
		{name: "claim name ignores the pod", shape: "pvc", pod: "anything", vol: "data", want: "data-pvc"},
		{name: "template ordinal 0", shape: "template", pod: "db-0", vol: "data", want: "data-db-0"},
		{name: "template ordinal 12", shape: "template", pod: "db-12", vol: "data", want: "data-db-12"},
		{name: "template largest ordinal", shape: "template", pod: "db-999999999", vol: "data", want: "data-db-999999999"},
		{name: "template other set", shape: "template", pod: "web-0", vol: "data", wantErr: `pod name "web-0" is not db-<ordinal>`},
		{name: "template set name prefix only", shape: "template", pod: "dbx-0", vol: "data", wantErr: "is not db-<ordinal>"},
		{name: "template no ordinal", shape: "template", pod: "db-", vol: "data", wantErr: "is not db-<ordinal>"},
		{name: "template leading zero", shape: "template", pod: "db-01", vol: "data", wantErr: "is not db-<ordinal>"},
		{name: "template ordinal too long", shape: "template", pod: "db-1234567890", vol: "data", wantErr: "is not db-<ordinal>"},
		{name: "template signed ordinal", shape: "template", pod: "db-+1", vol: "data", wantErr: "not a decimal number"},
		{name: "template nested name", shape: "template", pod: "db-1-1", vol: "data", wantErr: "not a decimal number"},
		{name: "template hex ordinal", shape: "template", pod: "db-0x1", vol: "data", wantErr: "is not db-<ordinal>"},
		{name: "template slash", shape: "template", pod: "db-1/x", vol: "data", wantErr: "not a decimal number"},
		{name: "ephemeral", shape: "ephemeral", pod: "web-7d9f-abcde", vol: "scratch", want: "web-7d9f-abcde-scratch"},
		{name: "ephemeral upper case pod", shape: "ephemeral", pod: "Web", vol: "scratch", wantErr: `pod name "Web" is not a DNS-1123 subdomain`},
		{name: "ephemeral slash", shape: "ephemeral", pod: "a/b", vol: "scratch", wantErr: "not a DNS-1123 subdomain"},
		{name: "ephemeral empty pod", shape: "ephemeral", pod: "", vol: "scratch", wantErr: "not a DNS-1123 subdomain"},
		{name: "ephemeral too long", shape: "ephemeral", pod: strings.Repeat("a", 250), vol: "scratch", wantErr: "claim name"},
		{name: "no claim", shape: "", pod: "p", vol: "data", wantErr: "claim names no claim"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodClaim(tt.shape)
			name, err := c.ClaimFor(tt.pod, tt.vol)
			id, idErr := c.Identity(tt.pod, tt.vol)
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "volume "+tt.vol+": ") {
					t.Fatalf("ClaimFor = %q, %v; want an error naming volume %s and %q", name, err, tt.vol, tt.wantErr)
				}
				if idErr == nil || idErr.Error() != err.Error() {
					t.Fatalf("Identity = %q, %v; want ClaimFor's error", id, idErr)
				}
				return
			}
			if err != nil || name != tt.want {
				t.Fatalf("ClaimFor = %q, %v; want %q", name, err, tt.want)
			}
			if idErr != nil || id != "prod/"+tt.want {
				t.Fatalf("Identity = %q, %v; want prod/%s", id, idErr, tt.want)
			}
		})
	}
	// Distinct pods, claims and namespaces never share an identity.
	a, b := goodClaim("template"), goodClaim("template")
	b.Namespace = "other"
	ids := map[string]bool{}
	for _, c := range []Claim{a, b} {
		for _, pod := range []string{"db-0", "db-1"} {
			id, err := c.Identity(pod, "data")
			if err != nil {
				t.Fatal(err)
			}
			if ids[id] {
				t.Fatalf("identity %s repeats", id)
			}
			ids[id] = true
		}
	}
}

// specJSON is a sealed spec with the given volumes and one container with the given mounts
// and devices, as JSON.
func specJSON(t *testing.T, vols []Volume, mounts []Mount, devices []Device) []byte {
	t.Helper()
	s := Spec{Version: Version, Workload: "w", Volumes: vols, Policy: Policy{Logs: LogsAllow},
		InitContainers: []Container{{Name: "init", Mounts: mounts, Devices: devices}},
		Containers:     []Container{{Name: "app", Mounts: mounts, Devices: devices}}}
	raw, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestUnmarshalVolumes(t *testing.T) {
	fsClaim, blockClaim := goodClaim("pvc"), goodClaim("template")
	blockClaim.Mode = VolumeModeBlock
	badClaim := goodClaim("pvc")
	badClaim.SizeBytes = 1
	enc := func(name string, c Claim) Volume { return Volume{Name: name, Kind: VolumeEncrypted, Claim: &c} }
	tests := []struct {
		name    string
		vols    []Volume
		mounts  []Mount
		devices []Device
		want    string // "" = valid
	}{
		{name: "filesystem mount and block device",
			vols:    []Volume{enc("data", fsClaim), enc("raw", blockClaim), {Name: "tmp", Kind: VolumeTmpfs}},
			mounts:  []Mount{{Volume: "data", Path: "/var/lib/db", SubPath: "db", ReadOnly: true}, {Volume: "tmp", Path: "/tmp"}},
			devices: []Device{{Volume: "raw", Path: "/dev/xvda"}}},
		{name: "encrypted volume without claim", vols: []Volume{{Name: "data", Kind: VolumeEncrypted}}, want: "volume data: encrypted volume without claim"},
		{name: "claim on a tmpfs", vols: []Volume{{Name: "data", Kind: VolumeTmpfs, Claim: &fsClaim}}, want: "volume data: claim on a tmpfs volume"},
		{name: "bad claim", vols: []Volume{enc("data", badClaim)}, want: "volume data: claim.sizeBytes"},
		{name: "name not a label", vols: []Volume{enc("Data", fsClaim)}, want: `name "Data" is not a DNS-1123 label`},
		{name: "duplicate", vols: []Volume{enc("data", fsClaim), {Name: "data", Kind: VolumeTmpfs}}, want: `volumes[1]: duplicate name "data"`},
		{name: "device of a filesystem volume", vols: []Volume{enc("data", fsClaim)}, devices: []Device{{Volume: "data", Path: "/dev/x"}}, want: "container init: device data: not a Block encrypted volume"},
		{name: "device of a tmpfs", vols: []Volume{{Name: "tmp", Kind: VolumeTmpfs}}, devices: []Device{{Volume: "tmp", Path: "/dev/x"}}, want: "device tmp: not a Block"},
		{name: "device of no volume", devices: []Device{{Volume: "nope", Path: "/dev/x"}}, want: "device nope: not a Block"},
		{name: "relative device path", vols: []Volume{enc("raw", blockClaim)}, devices: []Device{{Volume: "raw", Path: "dev/x"}}, want: `device raw: path "dev/x" is not absolute`},
		{name: "mount of a block volume", vols: []Volume{enc("raw", blockClaim)}, mounts: []Mount{{Volume: "raw", Path: "/raw"}}, want: "mount raw: a Block volume is a device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := specJSON(t, tt.vols, tt.mounts, tt.devices)
			s, err := Unmarshal(raw)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(s.Volumes, tt.vols) || !reflect.DeepEqual(s.Containers[0].Devices, tt.devices) || !reflect.DeepEqual(s.Containers[0].Mounts, tt.mounts) {
					t.Fatalf("round trip changed the volumes: %s", raw)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "sealed spec w: ") {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParsePlaceholderVolumes(t *testing.T) {
	many := map[string]PlaceholderVolume{}
	for i := range MaxPlaceholderVolumes + 1 {
		many[fmt.Sprintf("v%d", i)] = PlaceholderVolume{Mode: VolumeModeBlock, SizeBytes: MinVolumeBytes}
	}
	tooMany, _ := json.Marshal(many)
	delete(many, "v0")
	most, _ := json.Marshal(many)
	tests := []struct {
		name, in string
		want     map[string]PlaceholderVolume
		wantErr  string
	}{
		{name: "two", in: `{"data":{"mode":"Filesystem","sizeBytes":1073741824},"raw":{"mode":"Block","sizeBytes":67108864}}`,
			want: map[string]PlaceholderVolume{"data": {VolumeModeFilesystem, 1 << 30}, "raw": {VolumeModeBlock, MinVolumeBytes}}},
		{name: "empty", in: `{}`, want: map[string]PlaceholderVolume{}},
		{name: "at most", in: string(most), want: many},
		{name: "too many", in: string(tooMany), wantErr: "17 volumes, at most 16"},
		{name: "too long", in: `{"a":{"mode":"Block","sizeBytes":67108864}}` + strings.Repeat(" ", 4096), wantErr: "at most 4096"},
		{name: "unknown field", in: `{"a":{"mode":"Block","sizeBytes":67108864,"path":"/x"}}`, wantErr: `unknown field "path"`},
		{name: "trailing data", in: `{} {}`, wantErr: "trailing data"},
		{name: "not an object", in: `[]`, wantErr: "annotation sealpod.io/volumes"},
		{name: "not JSON", in: `data=1Gi`, wantErr: "annotation sealpod.io/volumes"},
		{name: "bad name", in: `{"../x":{"mode":"Block","sizeBytes":67108864}}`, wantErr: `volume name "../x"`},
		{name: "bad mode", in: `{"a":{"mode":"block","sizeBytes":67108864}}`, wantErr: `volume a: mode "block"`},
		{name: "no mode", in: `{"a":{"sizeBytes":67108864}}`, wantErr: `volume a: mode ""`},
		{name: "too small", in: `{"a":{"mode":"Block","sizeBytes":67108863}}`, wantErr: "volume a: sizeBytes 67108863 out of range"},
		{name: "too large", in: `{"a":{"mode":"Block","sizeBytes":70368744177665}}`, wantErr: "out of range"},
		{name: "negative", in: `{"a":{"mode":"Block","sizeBytes":-1}}`, wantErr: "out of range"},
		{name: "size overflow", in: `{"a":{"mode":"Block","sizeBytes":1e30}}`, wantErr: "annotation sealpod.io/volumes"},
		{name: "size as a string", in: `{"a":{"mode":"Block","sizeBytes":"1Gi"}}`, wantErr: "annotation sealpod.io/volumes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePlaceholderVolumes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "annotation "+AnnotationVolumes+": ") {
					t.Fatalf("got %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if PlaceholderVolumePath("data") != "/sealpod/volumes/data" {
		t.Errorf("PlaceholderVolumePath(data) = %q", PlaceholderVolumePath("data"))
	}
}

func FuzzParsePlaceholderVolumes(f *testing.F) {
	f.Add(`{"data":{"mode":"Filesystem","sizeBytes":1073741824},"raw":{"mode":"Block","sizeBytes":67108864}}`)
	f.Add(`{}`)
	f.Add(`null`)
	f.Add(`{"a":{"mode":"Block","sizeBytes":67108864,"x":1}}`)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParsePlaceholderVolumes(in)
		if err != nil {
			return
		}
		if len(got) > MaxPlaceholderVolumes {
			t.Fatalf("%d volumes accepted", len(got))
		}
		for n, v := range got {
			if !ValidVolumeName(n) || (v.Mode != VolumeModeFilesystem && v.Mode != VolumeModeBlock) || v.SizeBytes < MinVolumeBytes || v.SizeBytes > MaxVolumeBytes {
				t.Fatalf("accepted %q: %+v", n, v)
			}
		}
		// What was accepted reads back the same when written by the sealer.
		raw, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParsePlaceholderVolumes(string(raw))
		if err != nil || len(again) != len(got) {
			t.Fatalf("re-parse of %s: %v, %v", raw, again, err)
		}
		for n, v := range got {
			if again[n] != v {
				t.Fatalf("re-parse of %s changed %s", raw, n)
			}
		}
	})
}
