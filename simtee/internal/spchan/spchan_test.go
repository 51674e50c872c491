package spchan

import (
	"strings"
	"testing"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/internal/tee"
)

func TestTriage(t *testing.T) {
	v := simsp.ProtocolVersion
	cases := []struct {
		name    string
		req     simsp.Request
		tee     string // want this TEE answer
		err     string // want an error containing this
		forward bool   // want nil: the device answers
	}{
		{"tee", simsp.Request{Version: v, Kind: simsp.KindTEE}, "sim-tdx", "", false},
		{"accepted", simsp.Request{Version: v, Kind: simsp.KindQuote}, "", "", true},
		{"also accepted", simsp.Request{Version: v, Kind: ""}, "", "", true},
		{"other version", simsp.Request{Version: v + 1, Kind: simsp.KindTEE}, "", "request version", false},
		{"other kind", simsp.Request{Version: v, Kind: simsp.KindReport}, "", `this host simulates sim-tdx, which makes TDX quotes only (kind "tdx-quote")`, false},
		{"invalid UTF-8 kind", simsp.Request{Version: v, Kind: "\xff\xfeq"}, "", `request kind "?q"`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Triage(&tc.req, tee.SimTDX, "makes TDX quotes", "", simsp.KindQuote)
			switch {
			case tc.forward:
				if r != nil {
					t.Fatalf("got %+v, want the request handed to the device", r)
				}
			case r == nil:
				t.Fatal("handed to the device, want an answer")
			case tc.tee != "" && (r.TEE != tc.tee || r.Error != ""):
				t.Fatalf("got %+v, want TEE %q", r, tc.tee)
			case tc.err != "" && !strings.Contains(r.Error, tc.err):
				t.Fatalf("error %q, want it to contain %q", r.Error, tc.err)
			}
		})
	}
}
