// Command frontend is the guestbook's web tier (examples/guestbook), in the manner of the
// historical guestbook-go: GET /guestbook reads the entries from a Redis follower, POST
// /guestbook appends one to the list on the leader (and answers with the leader's list), so
// an entry read back through the follower has crossed the leader → follower replication.
// GET / is a small page using both; GET /info shows a Redis server's INFO replication
// (?from=leader|follower); GET /healthz answers ok.
//
// Where the Redis servers are: GET_HOSTS_FROM=dns (the default, like the upstream PHP
// frontend) uses $REDIS_LEADER and $REDIS_FOLLOWER, by default redis-leader:6379 and
// redis-follower:6379 (the Services' names); GET_HOSTS_FROM=env uses the Services'
// environment variables (REDIS_LEADER_SERVICE_HOST, …_PORT). It listens on $PORT (8080).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sealpod/sealpod/examples/guestbook/internal/resp"
)

// listKey is the Redis list holding the entries.
const listKey = "guestbook"

// maxEntry is the longest entry accepted, in bytes.
const maxEntry = 1024

type frontend struct {
	leader, follower string // host:port
}

func main() {
	fe, err := fromEnv(os.Getenv)
	if err != nil {
		log.Fatalf("frontend: %v", err)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: ":" + port, Handler: fe.routes(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Printf("guestbook frontend on :%s, leader %s, follower %s", port, fe.leader, fe.follower)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("frontend: %v", err)
	}
}

// fromEnv reads the Redis addresses (see the package comment).
func fromEnv(getenv func(string) string) (*frontend, error) {
	fe := &frontend{leader: "redis-leader:6379", follower: "redis-follower:6379"}
	switch mode := getenv("GET_HOSTS_FROM"); mode {
	case "", "dns":
		if v := getenv("REDIS_LEADER"); v != "" {
			fe.leader = v
		}
		if v := getenv("REDIS_FOLLOWER"); v != "" {
			fe.follower = v
		}
	case "env":
		fe.leader = net.JoinHostPort(getenv("REDIS_LEADER_SERVICE_HOST"), getenv("REDIS_LEADER_SERVICE_PORT"))
		fe.follower = net.JoinHostPort(getenv("REDIS_FOLLOWER_SERVICE_HOST"), getenv("REDIS_FOLLOWER_SERVICE_PORT"))
	default:
		return nil, fmt.Errorf("GET_HOSTS_FROM %q: want dns or env", mode)
	}
	for name, addr := range map[string]string{"leader": fe.leader, "follower": fe.follower} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" || strings.ContainsAny(addr, " /\t") {
			return nil, fmt.Errorf("redis %s address %q: want host:port", name, addr)
		}
	}
	return fe, nil
}

func (fe *frontend) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /guestbook", fe.list)
	mux.HandleFunc("POST /guestbook", fe.add)
	mux.HandleFunc("GET /info", fe.info)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	})
	return mux
}

// answer is the JSON of GET and POST /guestbook.
type answer struct {
	Entries []string `json:"entries"`
	From    string   `json:"from"` // the Redis server the entries were read from
}

func (fe *frontend) entries(ctx context.Context, w http.ResponseWriter, addr string, status int) {
	v, err := resp.Do(ctx, addr, "LRANGE", listKey, "0", "-1")
	var entries []string
	if err == nil {
		entries, err = v.Strings()
	}
	if err != nil {
		log.Printf("LRANGE on %s: %v", addr, err)
		http.Error(w, "redis "+addr+" unavailable", http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(answer{Entries: entries, From: addr})
}

func (fe *frontend) list(w http.ResponseWriter, r *http.Request) {
	fe.entries(r.Context(), w, fe.follower, http.StatusOK)
}

// add appends the form value "entry" (or a text/plain body) to the leader's list.
func (fe *frontend) add(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4*maxEntry)
	var entry string
	if strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "entry too long", http.StatusRequestEntityTooLarge)
			return
		}
		entry = string(b)
	} else {
		entry = r.FormValue("entry")
	}
	entry = strings.TrimSpace(entry)
	if err := validEntry(entry); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if _, err := resp.Do(r.Context(), fe.leader, "RPUSH", listKey, entry); err != nil {
		log.Printf("RPUSH on %s: %v", fe.leader, err)
		http.Error(w, "redis "+fe.leader+" unavailable", http.StatusBadGateway)
		return
	}
	fe.entries(r.Context(), w, fe.leader, http.StatusCreated)
}

// validEntry accepts 1 to maxEntry bytes of printable UTF-8 text.
func validEntry(s string) error {
	if s == "" || len(s) > maxEntry || !utf8.ValidString(s) {
		return fmt.Errorf("entry: want 1 to %d bytes of UTF-8 text", maxEntry)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("entry: character %U is not printable", r)
		}
	}
	return nil
}

// info answers the INFO replication section of the follower (or ?from=leader).
func (fe *frontend) info(w http.ResponseWriter, r *http.Request) {
	addr := fe.follower
	switch r.URL.Query().Get("from") {
	case "", "follower":
	case "leader":
		addr = fe.leader
	default:
		http.Error(w, "from: want leader or follower", http.StatusBadRequest)
		return
	}
	v, err := resp.Do(r.Context(), addr, "INFO", "replication")
	if err != nil || v.Kind != resp.BulkString {
		log.Printf("INFO on %s: %v", addr, err)
		http.Error(w, "redis "+addr+" unavailable", http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, v.Str)
}

// page is the guestbook's page: the entries (read from a follower) and a form.
const page = `<!doctype html>
<meta charset="utf-8">
<title>Guestbook</title>
<h1>Guestbook</h1>
<form id="f"><input name="entry" maxlength="1024" autofocus> <button>Submit</button></form>
<ul id="entries"></ul>
<script>
const ul = document.getElementById("entries");
function show(a) {
  ul.replaceChildren(...a.entries.map(e => { const li = document.createElement("li"); li.textContent = e; return li; }));
}
function load() { fetch("guestbook").then(r => r.json()).then(show); }
document.getElementById("f").onsubmit = ev => {
  ev.preventDefault();
  fetch("guestbook", {method: "POST", body: new URLSearchParams(new FormData(ev.target))}).then(r => r.json()).then(show);
  ev.target.reset();
};
load(); setInterval(load, 2000);
</script>
`
