package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sealpod/sealpod/examples/guestbook/internal/resp"
)

// fakeRedis answers RPUSH, LRANGE and INFO on a loopback port, with a list of its own.
type fakeRedis struct {
	mu   sync.Mutex
	list []string
	role string
	addr string
}

func newFakeRedis(t *testing.T, role string, list ...string) *fakeRedis {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeRedis{list: list, role: role, addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeRedis) serve(c net.Conn) {
	defer c.Close()
	v, err := resp.ReadReply(bufio.NewReader(c))
	if err != nil {
		return
	}
	args, _ := v.Strings()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []byte
	switch {
	case len(args) == 3 && args[0] == "RPUSH" && args[1] == listKey:
		f.list = append(f.list, args[2])
		out = []byte(":" + itoa(len(f.list)) + "\r\n")
	case len(args) == 4 && args[0] == "LRANGE" && args[1] == listKey:
		var items []string
		for _, e := range f.list {
			items = append(items, "$"+itoa(len(e))+"\r\n"+e+"\r\n")
		}
		out = []byte("*" + itoa(len(f.list)) + "\r\n" + strings.Join(items, ""))
	case len(args) == 2 && args[0] == "INFO":
		s := "# Replication\r\nrole:" + f.role + "\r\n"
		out = []byte("$" + itoa(len(s)) + "\r\n" + s + "\r\n")
	default:
		out = []byte("-ERR unknown command\r\n")
	}
	_, _ = c.Write(out)
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestWriteLeaderReadFollower: POST goes to the leader, GET reads the follower (whose list
// here is deliberately different, as replication would make it equal).
func TestWriteLeaderReadFollower(t *testing.T) {
	leader := newFakeRedis(t, "master", "old")
	follower := newFakeRedis(t, "slave", "replicated")
	srv := httptest.NewServer((&frontend{leader: leader.addr, follower: follower.addr}).routes())
	defer srv.Close()

	res, err := http.PostForm(srv.URL+"/guestbook", url.Values{"entry": {"  hello, sealed world  "}})
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %v", res.StatusCode, err)
	}
	res.Body.Close()
	if !reflect.DeepEqual(a, answer{Entries: []string{"old", "hello, sealed world"}, From: leader.addr}) {
		t.Fatalf("POST answered %+v", a)
	}
	res, err = http.Post(srv.URL+"/guestbook", "text/plain", strings.NewReader("second"))
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST text/plain: %v %v", res.StatusCode, err)
	}
	res.Body.Close()
	if !reflect.DeepEqual(leader.list, []string{"old", "hello, sealed world", "second"}) {
		t.Fatalf("leader list %q", leader.list)
	}

	res, err = http.Get(srv.URL + "/guestbook")
	if err != nil {
		t.Fatal(err)
	}
	a = answer{}
	_ = json.NewDecoder(res.Body).Decode(&a)
	res.Body.Close()
	if !reflect.DeepEqual(a, answer{Entries: []string{"replicated"}, From: follower.addr}) {
		t.Fatalf("GET answered %+v, want the follower's list", a)
	}

	for from, role := range map[string]string{"": "role:slave", "leader": "role:master"} {
		res, err := http.Get(srv.URL + "/info?from=" + from)
		if err != nil {
			t.Fatal(err)
		}
		b := new(strings.Builder)
		_, _ = bufio.NewReader(res.Body).WriteTo(b)
		res.Body.Close()
		if !strings.Contains(b.String(), role) {
			t.Errorf("/info?from=%s: %q", from, b)
		}
	}
}

func TestRefusals(t *testing.T) {
	leader := newFakeRedis(t, "master")
	srv := httptest.NewServer((&frontend{leader: leader.addr, follower: "127.0.0.1:1"}).routes())
	defer srv.Close()
	for _, tt := range []struct {
		entry string
		code  int
	}{
		{"", http.StatusBadRequest},
		{"   ", http.StatusBadRequest},
		{"bell\a", http.StatusBadRequest},
		{strings.Repeat("x", maxEntry+1), http.StatusBadRequest},
		{"\xff\xfe", http.StatusBadRequest},
	} {
		res, err := http.PostForm(srv.URL+"/guestbook", url.Values{"entry": {tt.entry}})
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.code {
			t.Errorf("entry %.20q: %d, want %d", tt.entry, res.StatusCode, tt.code)
		}
	}
	if len(leader.list) != 0 {
		t.Fatalf("refused entries reached the leader: %q", leader.list)
	}
	// The follower is down: 502, not an empty list.
	res, err := http.Get(srv.URL + "/guestbook")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET with the follower down: %d", res.StatusCode)
	}
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		env              map[string]string
		leader, follower string
		err              string
	}{
		{nil, "redis-leader:6379", "redis-follower:6379", ""},
		{map[string]string{"GET_HOSTS_FROM": "dns", "REDIS_FOLLOWER": "10.96.0.9:6379"}, "redis-leader:6379", "10.96.0.9:6379", ""},
		{map[string]string{"GET_HOSTS_FROM": "env", "REDIS_LEADER_SERVICE_HOST": "10.96.0.5", "REDIS_LEADER_SERVICE_PORT": "6379",
			"REDIS_FOLLOWER_SERVICE_HOST": "10.96.0.6", "REDIS_FOLLOWER_SERVICE_PORT": "6379"}, "10.96.0.5:6379", "10.96.0.6:6379", ""},
		{map[string]string{"GET_HOSTS_FROM": "env"}, "", "", "want host:port"},
		{map[string]string{"GET_HOSTS_FROM": "files"}, "", "", "want dns or env"},
		{map[string]string{"REDIS_LEADER": "redis leader"}, "", "", "want host:port"},
	}
	for _, tt := range tests {
		fe, err := fromEnv(func(k string) string { return tt.env[k] })
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: err %v, want %q", tt.env, err, tt.err)
			}
			continue
		}
		if err != nil || fe.leader != tt.leader || fe.follower != tt.follower {
			t.Errorf("%v: %+v %v", tt.env, fe, err)
		}
	}
}
