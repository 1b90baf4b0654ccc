package gateway

import (
	"github.com/postern/postern/gateway/audit"

	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg      *prometheus.Registry
	sessions *prometheus.CounterVec
	refused  *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	active   prometheus.Gauge
	agents   prometheus.Gauge
	panics   prometheus.Counter
	enrolled *prometheus.CounterVec
	pgQuery  *prometheus.CounterVec
	pgCancel *prometheus.CounterVec

	httpRequests *prometheus.CounterVec
	grpcCalls    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_sessions_total",
			Help: "Client sessions by outcome (ok, denied, error)."}, []string{"outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_connections_refused_total",
			Help: "Connections refused before an identity was established, by reason."}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_relayed_bytes_total",
			Help: "Bytes relayed for clients, by direction (in: client to service)."}, []string{"direction"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "postern_sessions_active",
			Help: "Client sessions being relayed now."}),
		agents: prometheus.NewGauge(prometheus.GaugeOpts{Name: "postern_agent_sessions",
			Help: "Agent tunnel sessions connected now."}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{Name: "postern_handler_panics_total",
			Help: "Connection handlers that panicked and were recovered."}),
		enrolled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_certificates_issued_total",
			Help: "SVIDs issued over the API, by kind of request (enroll, renew) and result."}, []string{"request", "result"}),
		pgQuery: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_postgres_queries_total",
			Help: "Postgres queries (a Query or an Execute) decided, by verdict (allow, deny) and statement class."}, []string{"verdict", "class"}),
		pgCancel: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_postgres_cancels_total",
			Help: "Postgres CancelRequests, by whether their key was a live session's (true, false)."}, []string{"known"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_http_requests_total",
			Help: "HTTP requests decided, by verdict (allow, deny) and the status the client got."}, []string{"verdict", "status"}),
		grpcCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_grpc_calls_total",
			Help: "gRPC calls decided, by verdict (allow, deny) and gRPC status code."}, []string{"verdict", "code"}),
	}
	m.reg.MustRegister(m.sessions, m.refused, m.bytes, m.active, m.agents, m.panics, m.enrolled, m.pgQuery, m.pgCancel,
		m.httpRequests, m.grpcCalls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watchAudit exports the recorder's counters.
func (m *metrics) watchAudit(l *audit.Log) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "postern_audit_dropped_events_total",
			Help: "Events that could not be recorded (each is also logged)."},
			func() float64 { return float64(l.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "postern_audit_failed_sessions_total",
			Help: "Sessions whose recording failed (closed, unless recording fails open)."},
			func() float64 { return float64(l.Failed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "postern_audit_upload_failures_total",
			Help: "Sealed recordings that could not be copied to the recordings bucket (retried at the next start)."},
			func() float64 { return float64(l.UploadFailed()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "postern_audit_buffered_bytes",
			Help: "Bytes of records waiting for the disk."},
			func() float64 { return float64(l.Buffered()) }),
	)
}

func promhttpHandler(m *metrics) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
