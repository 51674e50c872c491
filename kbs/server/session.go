package server

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"
)

// Session errors.
var (
	ErrSessionUnknown = errors.New("unknown session or nonce already used")
	ErrNonceExpired   = errors.New("nonce expired")
	ErrTooManySession = errors.New("too many open sessions")
)

// session is the state between auth and attest. It lives in memory: the auth → attest pair
// must reach the same replica (session affinity); tokens then verify at any replica.
type session struct {
	id       string
	nonce    []byte
	tee      string
	workload string
	expires  time.Time
}

type sessions struct {
	mu    sync.Mutex
	m     map[string]*session
	max   int
	ttl   time.Duration
	sweep time.Time
}

func newSessions(ttl time.Duration, max int) *sessions {
	return &sessions{m: make(map[string]*session), ttl: ttl, max: max}
}

func randomB64(n int) (string, []byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	return base64.RawURLEncoding.EncodeToString(b), b, nil
}

// open creates a session with a fresh 32-byte nonce.
func (s *sessions) open(tee, workload string, now time.Time) (*session, error) {
	id, _, err := randomB64(18)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sess := &session{id: id, nonce: nonce, tee: tee, workload: workload, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.After(s.sweep) || len(s.m) >= s.max {
		for k, v := range s.m {
			if now.After(v.expires) {
				delete(s.m, k)
			}
		}
		s.sweep = now.Add(s.ttl / 4)
	}
	if len(s.m) >= s.max {
		return nil, ErrTooManySession
	}
	s.m[id] = sess
	return sess, nil
}

// take removes and returns the session: a nonce is usable exactly once, whatever the outcome.
func (s *sessions) take(id string, now time.Time) (*session, error) {
	s.mu.Lock()
	sess, ok := s.m[id]
	delete(s.m, id)
	s.mu.Unlock()
	if !ok {
		return nil, ErrSessionUnknown
	}
	if now.After(sess.expires) {
		return nil, ErrNonceExpired
	}
	return sess, nil
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
