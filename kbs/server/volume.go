package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/registry"
)

// Volume generations (issue 15; docs/kbs.md "Encrypted volumes"): begin and commit, each
// authenticated by the token of the workload's attest answer and keyed by (the token's
// workload, the volume identity). The registry keeps them in the store.

const maxVolumeBody = 4 << 10

// volumeToken checks the bearer token of a volume call: MAC and expiry. It is not bound to
// the session cookie (the session ends with attest; the token is the guest's credential) and
// a token whose attest answer released the keys is accepted. The registry checks that the
// workload's generation is still the token's.
func (s *Server) volumeToken(r *http.Request, ev *auditEvent) (*Claims, *httpError) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, fail(http.StatusUnauthorized, api.ReasonToken, "missing bearer token (the token of the attest answer)")
	}
	c, err := s.tokens.verify(tok, s.cfg.Now())
	if errors.Is(err, ErrTokenExpired) {
		return nil, fail(http.StatusUnauthorized, api.ReasonTokenExpired, "%v: attest again", err)
	}
	if err != nil {
		return nil, fail(http.StatusUnauthorized, api.ReasonToken, "%v", err)
	}
	ev.workload, ev.tee = c.Workload, c.TEE
	return c, nil
}

// readVolumeBody reads a volume call's body (at most maxVolumeBody bytes).
func readVolumeBody(w http.ResponseWriter, r *http.Request) ([]byte, *httpError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxVolumeBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fail(http.StatusRequestEntityTooLarge, api.ReasonBadRequest, "request body larger than %d bytes", maxVolumeBody)
		}
		return nil, fail(http.StatusBadRequest, api.ReasonBadRequest, "read request body: %v", err)
	}
	return b, nil
}

// volumeRequest is the preamble of every volume call: the bearer token (volumeToken), then
// the body (readVolumeBody).
func (s *Server) volumeRequest(w http.ResponseWriter, r *http.Request, ev *auditEvent) (*Claims, []byte, *httpError) {
	c, herr := s.volumeToken(r, ev)
	if herr != nil {
		return nil, nil, herr
	}
	b, herr := readVolumeBody(w, r)
	if herr != nil {
		return nil, nil, herr
	}
	return c, b, nil
}

// volumeFailure maps a registry error of a volume call to its answer.
func (s *Server) volumeFailure(op, workload string, err error) *httpError {
	switch {
	case errors.Is(err, registry.ErrVolumeConflict):
		return fail(http.StatusConflict, api.ReasonVolumeConflict, "%v", err)
	case errors.Is(err, registry.ErrVolumeLimit):
		return fail(http.StatusConflict, api.ReasonVolumeLimit, "%v", err)
	case errors.Is(err, registry.ErrWorkloadChanged):
		return fail(http.StatusUnauthorized, api.ReasonToken, "%v: attest again", err)
	case errors.Is(err, registry.ErrNoVolumeSecret):
		return fail(http.StatusForbidden, api.ReasonPolicy, "%v", err)
	case errors.Is(err, registry.ErrNotFound):
		return fail(http.StatusNotFound, api.ReasonNotFound, "workload %q is not registered", workload)
	case errors.Is(err, api.ErrVolumeIdentity):
		return fail(http.StatusBadRequest, api.ReasonBadRequest, "%v", err)
	case errors.Is(err, registry.ErrTampered), errors.Is(err, registry.ErrRollback):
		s.log.Error("volume generations refused", "op", op, "workload", workload, "err", err)
		return fail(http.StatusInternalServerError, api.ReasonInternal, "workload %s refused: %v", workload, err)
	}
	s.log.Error("volume generations", "op", op, "workload", workload, "err", err)
	return fail(http.StatusInternalServerError, api.ReasonInternal, "registry unavailable")
}

func (s *Server) handleVolumeBegin(w http.ResponseWriter, r *http.Request) (ev auditEvent, herr *httpError) {
	ev = auditEvent{kind: audit.KindVolume}
	defer func() { s.metrics.volume("begin", herr) }()
	c, b, herr := s.volumeRequest(w, r, &ev)
	if herr != nil {
		return ev, herr
	}
	req, err := api.DecodeVolumeBeginRequest(b)
	if err != nil {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "%v", err)
	}
	committed, pending, err := s.cfg.Registry.VolumeBegin(r.Context(), c.Workload, c.Generation, req.Volume)
	if err != nil {
		return ev, s.volumeFailure("begin", c.Workload, err)
	}
	ev.detail = fmt.Sprintf("begin %s: committed %d, pending %d", req.Volume, committed, pending)
	ev.mustAudit = true
	return ev, encode(w, api.VolumeBeginResponse{Committed: committed, Pending: pending})
}

func (s *Server) handleVolumeCommit(w http.ResponseWriter, r *http.Request) (ev auditEvent, herr *httpError) {
	ev = auditEvent{kind: audit.KindVolume}
	defer func() { s.metrics.volume("commit", herr) }()
	c, b, herr := s.volumeRequest(w, r, &ev)
	if herr != nil {
		return ev, herr
	}
	req, err := api.DecodeVolumeCommitRequest(b)
	if err != nil {
		return ev, fail(http.StatusBadRequest, api.ReasonBadRequest, "%v", err)
	}
	committed, err := s.cfg.Registry.VolumeCommit(r.Context(), c.Workload, c.Generation, req.Volume, req.Generation)
	if err != nil {
		return ev, s.volumeFailure("commit", c.Workload, err)
	}
	ev.detail = fmt.Sprintf("commit %s: committed %d", req.Volume, committed)
	ev.mustAudit = true
	return ev, encode(w, api.VolumeCommitResponse{Committed: committed})
}
