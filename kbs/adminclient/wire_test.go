package adminclient_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/adminclient"
	"github.com/sealpod/sealpod/kbs/api"
)

// TestWireFormatGolden: the admin API's JSON bodies are byte-identical to what the broker sent
// before the client moved out of kbs/admin. testdata/wire.golden was written by marshalling
// the same values with the kbs/admin, kbs/audit and kbs/registry types of that code
// (json.MarshalIndent "", "  ", one value after another, each followed by a newline).
func TestWireFormatGolden(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	wl := api.Workload{ID: "web", TEEs: []string{"sim"}, Generation: 2, UpdatedAt: ts}
	vals := []any{
		adminclient.ClientConfig{Version: 1, URL: "https://kbs.example:8443", CAFile: "tls-ca.pem", CertFile: "admin.pem", KeyFile: "admin.key"},
		adminclient.Status{Time: ts, Workloads: 3, Head: api.ChainHead{Seq: 7, Hash: "ab"}, HistoryValid: false, HistoryError: "bad", MeshRootSHA: "cd", Identity: "admin:x/1", AuditAnchor: &api.AuditAnchor{Seq: 1, Events: 2, Hash: "ef", Through: "2025030405", Time: ts}},
		adminclient.Status{Time: ts},
		adminclient.CAInfo{RootPEM: "r", BundlePEM: "b", RootSHA256: "s", RootSubject: "CN=root", RootNotAfter: ts, IntermediateSubject: "CN=int", IntermediateExpiry: ts},
		adminclient.RevocationsResponse{Revocations: []adminclient.Revocation{{Serial: "1f", Subject: "CN=a", NotAfter: ts, Reason: "lost", RevokedAt: ts, RevokedBy: "admin:b/2"}, {Serial: "2", RevokedAt: ts}}},
		adminclient.RevokeRequest{Serial: "1f", Subject: "CN=a", NotAfter: ts, Reason: "lost"},
		adminclient.RevokeRequest{Serial: "1f"},
		adminclient.AuditResponse{Events: []api.AuditEvent{{Time: ts, Kind: api.AuditKindAdmin, Workload: "web", TEE: "sim", Result: api.AuditResultOK, Reason: "put", Remote: "127.0.0.1:1"}, {Time: ts, Kind: api.AuditKindKey, Result: api.AuditResultDenied}}},
		adminclient.ErrorResponse{Error: "bad", Field: "tees"},
		adminclient.ErrorResponse{Error: "bad"},
		adminclient.PutResponse{Entry: api.HistoryEntry{Seq: 1, Time: ts, Actor: "admin:x/1", Op: api.OpPut, WorkloadID: "web", Workload: &wl}, Workload: wl},
		adminclient.RemoveResponse{Entry: api.HistoryEntry{Seq: 2, Time: ts, Op: api.OpRemove, WorkloadID: "web"}},
		adminclient.ListResponse{Workloads: []api.Workload{wl}},
		adminclient.HistoryResponse{History: []api.HistoryEntry{}},
	}
	var got []byte
	for _, v := range vals {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatalf("marshal %T: %v", v, err)
		}
		got = append(append(got, b...), '\n')
	}
	want, err := os.ReadFile(filepath.Join("testdata", "wire.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("admin API JSON changed:\n--- got\n%s\n--- want\n%s", got, want)
	}
}
