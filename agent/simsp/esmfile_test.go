package simsp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestParseESMFileResponse: the guest takes exactly one bounded attachment and nothing else.
func TestParseESMFileResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp Response
		err  error
	}{
		{"attachment", Response{File: []byte("k")}, nil},
		{"largest", Response{File: make([]byte, MaxESMFile)}, nil},
		{"empty", Response{}, ErrESMFile},
		{"too large", Response{File: make([]byte, MaxESMFile+1)}, ErrESMFile},
		{"with a TEE name", Response{File: []byte("k"), TEE: "sim-pef"}, ErrESMFile},
		{"with a quote", Response{File: []byte("k"), Quote: []byte{1}}, ErrESMFile},
		{"with a report", Response{File: []byte("k"), Report: []byte{1}}, ErrESMFile},
		{"refused", Response{Error: "once per boot\x1b[2J"}, ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseESMFileResponse(&tc.resp, "sealpod-data-key")
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("%v, want %v", err, tc.err)
			}
			if err == nil && !bytes.Equal(got, tc.resp.File) {
				t.Fatalf("got %x", got)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\x1b") {
				t.Fatalf("error carries control characters: %q", err)
			}
		})
	}
}

// TestGetESMFile: the client sends a KindESMFile request naming the attachment, and refuses
// to ask for a name outside the attachment syntax.
func TestGetESMFile(t *testing.T) {
	guest, host := net.Pipe()
	defer guest.Close()
	go func() {
		defer host.Close()
		var req Request
		if err := ReadFrame(host, &req); err != nil {
			return
		}
		resp := Response{Error: "unexpected request"}
		if req.Version == ProtocolVersion && req.Kind == KindESMFile && req.Name == "sealpod-data-key" {
			resp = Response{File: []byte("data-key")}
		}
		_ = WriteFrame(host, resp)
	}()
	c := NewClient(guest)
	got, err := c.GetESMFile(context.Background(), "sealpod-data-key")
	if err != nil || string(got) != "data-key" {
		t.Fatalf("GetESMFile = %q, %v", got, err)
	}
	for _, bad := range []string{"", "../key", "1key", strings.Repeat("a", 32)} {
		if _, err := c.GetESMFile(context.Background(), bad); !errors.Is(err, ErrESMFile) {
			t.Errorf("GetESMFile(%q) = %v, want ErrESMFile", bad, err)
		}
	}
}

// FuzzGuestDecodeESMFile feeds arbitrary host answers to the attachment decoder: nothing
// panics, an accepted attachment is non-empty and bounded.
func FuzzGuestDecodeESMFile(f *testing.F) {
	var good bytes.Buffer
	if err := WriteFrame(&good, Response{File: []byte("0123456789abcdef0123456789abcdef")}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Response
		if err := ReadFrame(bytes.NewReader(data), &r); err != nil {
			return
		}
		if got, err := ParseESMFileResponse(&r, "sealpod-data-key"); err == nil && (len(got) == 0 || len(got) > MaxESMFile) {
			t.Fatalf("accepted %d bytes", len(got))
		}
	})
}
