package server

import (
	"encoding/base64"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sealpod/sealpod/kbs/verify"
)

type metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	verifications *prometheus.CounterVec
	verifyLatency *prometheus.HistogramVec
	volumeCalls   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	buckets := []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sealpod_kbs_requests_total", Help: "Protocol requests by endpoint and HTTP status."}, []string{"endpoint", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sealpod_kbs_request_duration_seconds", Help: "Request latency by endpoint.", Buckets: buckets}, []string{"endpoint"})
	m.verifications = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sealpod_kbs_verifications_total", Help: "Evidence verifications by TEE and result (ok, or the rejected field)."}, []string{"tee", "result"})
	m.verifyLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sealpod_kbs_verification_duration_seconds", Help: "Evidence verification latency by TEE.", Buckets: buckets}, []string{"tee"})
	m.volumeCalls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sealpod_kbs_volume_calls_total", Help: "Volume generation calls by op (begin, commit) and result (ok, or the refusal's reason)."}, []string{"op", "result"})
	m.reg.MustRegister(m.requests, m.latency, m.verifications, m.verifyLatency, m.volumeCalls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(endpoint string, status int, d time.Duration) {
	m.requests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(endpoint).Observe(d.Seconds())
}

func (m *metrics) verified(tee string, err error, d time.Duration) {
	result := "ok"
	var rej *verify.Rejection
	switch {
	case errors.As(err, &rej):
		result = rej.Field
	case err != nil:
		result = "error"
	}
	m.verifications.WithLabelValues(tee, result).Inc()
	m.verifyLatency.WithLabelValues(tee).Observe(d.Seconds())
}

// volume counts a volume generation call: result "ok" or the refusal's reason (api.Reason*).
func (m *metrics) volume(op string, herr *httpError) {
	result := "ok"
	if herr != nil {
		result = herr.body.Reason
	}
	m.volumeCalls.WithLabelValues(op, result).Inc()
}

func decodeB64Header(v string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(v); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(v)
}
