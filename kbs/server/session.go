package server

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Session errors.
var (
	ErrSessionUnknown = errors.New("unknown session or nonce already used")
	ErrNonceExpired   = errors.New("nonce expired")
	ErrTooManySession = errors.New("too many open sessions")
	// ErrSourceShare: the client's source holds its share of the session table.
	ErrSourceShare = errors.New("too many open sessions from this source")
)

// SourceShareDivisor: by default one source (IPv4 address or IPv6 /64) may hold at most
// MaxSessions/SourceShareDivisor open sessions (1,000 of the default 100,000), so one client
// cannot fill the table and make every other pod's auth fail until its nonces expire.
const SourceShareDivisor = 100

// sourceOf names the client a request comes from: its IPv4 address, or the /64 of its IPv6
// address (one host usually owns a whole /64). An unparsable address is its own source.
func sourceOf(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

// session is the state between auth and attest. It lives in memory: the auth → attest pair
// must reach the same replica (session affinity); tokens then verify at any replica.
type session struct {
	id       string
	nonce    []byte
	tee      string
	workload string
	source   string
	expires  time.Time
}

type sessions struct {
	mu        sync.Mutex
	m         map[string]*session
	perSource map[string]int // open sessions by source
	max       int
	maxSource int
	ttl       time.Duration
	sweep     time.Time
}

func newSessions(ttl time.Duration, max, maxSource int) *sessions {
	return &sessions{m: make(map[string]*session), perSource: make(map[string]int), ttl: ttl, max: max, maxSource: maxSource}
}

// dropLocked removes a session and its count; s.mu is held.
func (s *sessions) dropLocked(id string, sess *session) {
	delete(s.m, id)
	if n := s.perSource[sess.source] - 1; n > 0 {
		s.perSource[sess.source] = n
	} else {
		delete(s.perSource, sess.source)
	}
}

func randomB64(n int) (string, []byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	return base64.RawURLEncoding.EncodeToString(b), b, nil
}

// open creates a session with a fresh 32-byte nonce for a client from source (see sourceOf).
// It fails with ErrSourceShare when source holds its share of the table and with
// ErrTooManySession when the table is full. Expired sessions are swept at most every ttl/4
// (and when the whole table is full), so a refused source costs a map lookup, not a sweep.
func (s *sessions) open(tee, workload, source string, now time.Time) (*session, error) {
	id, _, err := randomB64(18)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sess := &session{id: id, nonce: nonce, tee: tee, workload: workload, source: source, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.After(s.sweep) || len(s.m) >= s.max {
		for k, v := range s.m {
			if now.After(v.expires) {
				s.dropLocked(k, v)
			}
		}
		s.sweep = now.Add(s.ttl / 4)
	}
	if s.perSource[source] >= s.maxSource {
		return nil, ErrSourceShare
	}
	if len(s.m) >= s.max {
		return nil, ErrTooManySession
	}
	s.m[id] = sess
	s.perSource[source]++
	return sess, nil
}

// take removes and returns the session: a nonce is usable exactly once, whatever the outcome.
func (s *sessions) take(id string, now time.Time) (*session, error) {
	s.mu.Lock()
	sess, ok := s.m[id]
	if ok {
		s.dropLocked(id, sess)
	}
	s.mu.Unlock()
	if !ok {
		return nil, ErrSessionUnknown
	}
	if now.After(sess.expires) {
		return nil, ErrNonceExpired
	}
	return sess, nil
}

// retryAfter is how long a refused client should wait: until the next sweep of expired
// sessions (at least one second).
func (s *sessions) retryAfter(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.sweep.Sub(now), time.Second)
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
