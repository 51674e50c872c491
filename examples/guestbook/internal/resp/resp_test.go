package resp

import (
	"bufio"
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		in   string
		want Value
	}{
		{"+OK\r\n", Value{Kind: SimpleString, Str: "OK"}},
		{"-ERR wrong type\r\n", Value{Kind: Error, Str: "ERR wrong type"}},
		{":42\r\n", Value{Kind: Integer, Int: 42}},
		{":-1\r\n", Value{Kind: Integer, Int: -1}},
		{"$5\r\nhe\r\no\r\n", Value{Kind: BulkString, Str: "he\r\no"}},
		{"$0\r\n\r\n", Value{Kind: BulkString}},
		{"$-1\r\n", Value{Kind: BulkString, Null: true}},
		{"*-1\r\n", Value{Kind: Array, Null: true}},
		{"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", Value{Kind: Array, Array: []Value{{Kind: BulkString, Str: "a"}, {Kind: Array, Array: []Value{{Kind: Integer, Int: 1}}}}}},
	}
	for _, tt := range tests {
		got, err := ReadReply(bufio.NewReader(strings.NewReader(tt.in)))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ReadReply(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestReadReplyRefuses(t *testing.T) {
	deep := strings.Repeat("*1\r\n", MaxDepth+1) + ":1\r\n"
	for _, in := range []string{
		"", "\r\n", "+OK\n", "+O\rK\r\n", ":\r\n", ":01\r\n", ":+1\r\n", ":1x\r\n", "$3\r\nab\r\n", "$2\r\nabc\r\n",
		"$-2\r\n", "$1048577\r\n", "*65537\r\n", "*2\r\n:1\r\n", "?x\r\n", deep, "+" + strings.Repeat("a", maxLine+1) + "\r\n",
		"$99999999999999999999\r\n",
	} {
		if v, err := ReadReply(bufio.NewReader(strings.NewReader(in))); err == nil {
			t.Errorf("ReadReply(%.40q) = %+v, want an error", in, v)
		}
	}
}

func TestAppendCommand(t *testing.T) {
	got := string(AppendCommand(nil, "RPUSH", "guestbook", "héllo\r\n"))
	want := "*3\r\n$5\r\nRPUSH\r\n$9\r\nguestbook\r\n$8\r\nhéllo\r\n\r\n"
	if got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	// A command round-trips through the parser (a request is an array of bulk strings).
	v, err := ReadReply(bufio.NewReader(strings.NewReader(got)))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := v.Strings(); err != nil || !reflect.DeepEqual(s, []string{"RPUSH", "guestbook", "héllo\r\n"}) {
		t.Fatalf("%q %v", s, err)
	}
}

// TestDo talks to a fake server: the command arrives as sent, an error reply is a
// ServerError.
func TestDo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []string, 2)
	go func() {
		for _, reply := range []string{"*2\r\n$1\r\na\r\n$1\r\nb\r\n", "-WRONGTYPE no list\r\n"} {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			v, _ := ReadReply(bufio.NewReader(c))
			s, _ := v.Strings()
			got <- s
			_, _ = c.Write([]byte(reply))
			c.Close()
		}
	}()
	v, err := Do(context.Background(), ln.Addr().String(), "LRANGE", "guestbook", "0", "-1")
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := v.Strings(); !reflect.DeepEqual(s, []string{"a", "b"}) {
		t.Fatalf("LRANGE reply %q", s)
	}
	if cmd := <-got; !reflect.DeepEqual(cmd, []string{"LRANGE", "guestbook", "0", "-1"}) {
		t.Fatalf("server got %q", cmd)
	}
	_, err = Do(context.Background(), ln.Addr().String(), "GET", "x")
	var se ServerError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("error reply: %v", err)
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$1\r\na\r\n:3\r\n", "$-1\r\n", "-ERR x\r\n", "*1\r\n*1\r\n*1\r\n:1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ReadReply(bufio.NewReader(strings.NewReader(string(b))))
		if err != nil {
			return
		}
		var check func(v Value, depth int)
		check = func(v Value, depth int) {
			if depth > MaxDepth || len(v.Str) > MaxBulk || len(v.Array) > MaxArray {
				t.Fatalf("accepted a reply beyond the limits: depth %d, %d bytes, %d elements", depth, len(v.Str), len(v.Array))
			}
			if (v.Kind == SimpleString || v.Kind == Error) && strings.ContainsAny(v.Str, "\r\n") {
				t.Fatalf("simple string with CR/LF: %q", v.Str)
			}
			for _, e := range v.Array {
				check(e, depth+1)
			}
		}
		check(v, 0)
	})
}
