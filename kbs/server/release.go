package server

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net/http"
	"sync"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/meshca"
	"github.com/sealpod/sealpod/kbs/registry"
)

// The two-request flow's part of attest (docs/kbs.md "The attestation sequence"): the body
// parser, the CSR check and the release of key and certificate in the attest answer.

// bodyPool holds the buffers attest bodies are read into (decodeAttest).
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// decodeAttest reads an attest body (at most limit bytes) and decodes it with
// api.DecodeAttestRequest (the one-pass parser of the canonical encoding, encoding/json for
// the rest; same answers as decodeBody).
func decodeAttest(w http.ResponseWriter, r *http.Request, limit int64, req *api.AttestRequest) *httpError {
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 2*int(limit) {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(http.StatusRequestEntityTooLarge, api.ReasonBadRequest, "request body larger than %d bytes", limit)
		}
		return fail(http.StatusBadRequest, api.ReasonBadRequest, "read request body: %v", err)
	}
	if err := api.DecodeAttestRequest(buf.Bytes(), req); err != nil {
		return fail(http.StatusBadRequest, api.ReasonBadRequest, "decode request body: %v", err)
	}
	return nil
}

// checkCSR parses a CSR sent with attest, verifies its self-signature and its binding to
// this attestation's REPORT_DATA.
func checkCSR(der []byte, rd [api.ReportDataSize]byte) (*x509.CertificateRequest, *httpError) {
	csr, err := meshca.ParseCSR(der)
	if err != nil {
		return nil, fail(http.StatusBadRequest, api.ReasonBadRequest, "attest request field csr: %v", err)
	}
	if err := api.CheckCSRBinding(csr, rd); err != nil {
		return nil, fail(http.StatusBadRequest, api.ReasonBadRequest, "attest request field csr: %v", err)
	}
	return csr, nil
}

// release fills the two-request flow's part of the attest answer: the data key and the
// volume secret (when the workload has one) sealed to the TEE key, and the workload
// certificate for the CSR's key with the registered SANs.
func (s *Server) release(resp *api.AttestResponse, wl *registry.Workload, volumeSecret []byte, csr *x509.CertificateRequest, teePub []byte) *httpError {
	plain, err := api.Keys{DataKey: wl.DataKey, VolumeSecret: volumeSecret}.Marshal()
	if err != nil {
		return fail(http.StatusInternalServerError, api.ReasonInternal, "workload %s: %v", wl.ID, err)
	}
	resp.SealedKeys, err = api.SealKey(plain, teePub)
	clear(plain)
	if errors.Is(err, api.ErrBadTEEKey) {
		return fail(http.StatusBadRequest, api.ReasonBadRequest, "attest request field teePubKey: %v", err)
	}
	if err != nil {
		return fail(http.StatusInternalServerError, api.ReasonInternal, "%v", err)
	}
	resp.Chain, err = s.cfg.MeshCA.IssueForKey(csr.PublicKey, wl.ID, wl.SANs, s.cfg.CertValidity)
	if err != nil {
		return fail(http.StatusInternalServerError, api.ReasonInternal, "issue certificate: %v", err)
	}
	resp.RootPEM = s.rootPEM
	return nil
}
