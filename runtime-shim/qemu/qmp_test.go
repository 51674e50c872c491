package qemu

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/runtime-shim/qemu/qmptest"
)

func TestParseQMPMessage(t *testing.T) {
	tests := []struct {
		line    string
		want    qmpMessage
		wantErr string
	}{
		{`{"QMP": {"version": {}, "capabilities": []}}`, qmpMessage{Greeting: true}, ""},
		{`{"return": {}, "id": "sealpod-1"}`, qmpMessage{ID: "sealpod-1", Return: []byte(`{}`)}, ""},
		{`{"return": [1, 2]}`, qmpMessage{Return: []byte(`[1, 2]`)}, ""},
		{`{"event": "DEVICE_ADDED", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}`, qmpMessage{Event: "DEVICE_ADDED"}, ""},
		{`{"error": {"class": "GenericError", "desc": "Duplicate ID"}, "id": "sealpod-2"}`, qmpMessage{ID: "sealpod-2", Err: &QMPError{Class: "GenericError", Desc: "Duplicate ID"}}, ""},
		{`[]`, qmpMessage{}, "not a JSON object"},
		{`null`, qmpMessage{}, "not a JSON object"},
		{`{"return": {}`, qmpMessage{}, "not a JSON object"},
		{`{}`, qmpMessage{}, "exactly one of"},
		{`{"return": {}, "error": {"class": "a", "desc": "b"}}`, qmpMessage{}, "exactly one of"},
		{`{"return": {}, "event": "X"}`, qmpMessage{}, "exactly one of"},
		{`{"return": null}`, qmpMessage{}, "null return"},
		{`{"return": {}, "id": 7}`, qmpMessage{}, "id is not a string"},
		{`{"error": {"class": "GenericError"}}`, qmpMessage{}, "without string class and desc"},
		{`{"error": "boom"}`, qmpMessage{}, "without string class and desc"},
		{`{"event": ""}`, qmpMessage{}, "event name"},
		{`{"event": 1}`, qmpMessage{}, "event name"},
		{`{"QMP": 1}`, qmpMessage{}, "greeting is not an object"},
		{`{"return": "` + strings.Repeat("a", MaxQMPLine) + `"}`, qmpMessage{}, "at most"},
	}
	for _, tc := range tests {
		got, err := parseQMPMessage([]byte(tc.line))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrQMPProtocol) {
				t.Errorf("%.60s: %v, want an ErrQMPProtocol containing %q", tc.line, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%.60s: %v", tc.line, err)
			continue
		}
		if got.Greeting != tc.want.Greeting || got.Event != tc.want.Event || got.ID != tc.want.ID ||
			string(got.Return) != string(tc.want.Return) || (got.Err == nil) != (tc.want.Err == nil) ||
			(got.Err != nil && *got.Err != *tc.want.Err) {
			t.Errorf("%.60s: %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

// FuzzParseQMPMessage: any line from QEMU gives a message of exactly one kind or an
// ErrQMPProtocol, never a panic.
func FuzzParseQMPMessage(f *testing.F) {
	for _, s := range []string{`{"QMP": {}}`, `{"return": {}, "id": "sealpod-1"}`, `{"error": {"class": "a", "desc": "b"}}`,
		`{"event": "X", "data": {"a": 1}}`, `{"return": null}`, `[]`, `{"id": 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := parseQMPMessage(line)
		if err != nil {
			if !errors.Is(err, ErrQMPProtocol) {
				t.Fatalf("error %v does not wrap ErrQMPProtocol", err)
			}
			return
		}
		kinds := 0
		for _, k := range []bool{m.Greeting, m.Event != "", m.Err != nil, m.Return != nil} {
			if k {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("%q: message of %d kinds: %+v", line, kinds, m)
		}
		if m.Err != nil && (len(m.Err.Desc) > 260 || len(m.Err.Class) > 260) {
			t.Fatalf("unbounded error text: %d bytes", len(m.Err.Desc))
		}
	})
}

// TestQMPClient: the client negotiates, skips events, matches ids, passes descriptors and
// refuses what is not a reply to its command.
func TestQMPClient(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		reply   qmptest.Reply
		wantErr string
	}{
		{"return", qmptest.Reply{Return: `{"a": 1}`}, ""},
		{"events before the reply", qmptest.Reply{Return: `{"a": 1}`, Events: []string{`{"event": "DEVICE_ADDED", "data": {}}`}}, ""},
		{"error reply", qmptest.Reply{Error: "Duplicate ID"}, "GenericError: Duplicate ID"},
		{"wrong id", qmptest.Reply{Raw: `{"return": {}, "id": "other"}`}, `reply id "other"`},
		{"no id", qmptest.Reply{Raw: `{"return": {}}`}, `reply id ""`},
		{"greeting again", qmptest.Reply{Raw: `{"QMP": {}}`}, "greeting in place of a reply"},
		{"malformed", qmptest.Reply{Raw: `{"return": `}, "not a JSON object"},
		{"oversized", qmptest.Reply{Raw: `{"return": "` + strings.Repeat("x", MaxQMPLine+10) + `"}`}, "longer than"},
		{"bad result", qmptest.Reply{Return: `{"a": "x"}`}, "return value"},
		{"hang", qmptest.Reply{Hang: true}, "i/o timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := qmptest.Start(t, func(qmptest.Command, []*os.File) qmptest.Reply { return tc.reply })
			q, err := DialQMP(ctx, srv.Path, 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			var res struct{ A int }
			err = q.Execute(ctx, "query-x", map[string]any{"k": "v"}, &res)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("%v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || res.A != 1 {
				t.Fatalf("%v, result %+v", err, res)
			}
			cmds := srv.Commands()
			if len(cmds) != 2 || cmds[0].Execute != "qmp_capabilities" || cmds[1].Execute != "query-x" || cmds[1].Arguments["k"] != "v" {
				t.Fatalf("commands %+v", cmds)
			}
		})
	}
	// A descriptor travels with its command.
	srv := qmptest.Start(t, qmptest.Hotplug(""))
	q, err := DialQMP(ctx, srv.Path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r struct {
		FDSet int `json:"fdset-id"`
	}
	if err := q.ExecuteWithFile(ctx, "add-fd", map[string]any{"fdset-id": 3}, f, &r); err != nil || r.FDSet != 3 {
		t.Fatalf("add-fd: %v %+v", err, r)
	}
	if err := q.Execute(ctx, "add-fd", map[string]any{"fdset-id": 4}, nil); err == nil {
		t.Fatal("add-fd without a descriptor: the fake QEMU saw one")
	}
	// Not a QMP server: no greeting.
	if _, err := DialQMP(ctx, "/nonexistent/qmp.sock", time.Second); err == nil {
		t.Fatal("dial of a missing socket succeeded")
	}
}
