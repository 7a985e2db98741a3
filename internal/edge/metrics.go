package edge

import (
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the edge's Prometheus series. Requests are labelled by
// project id (bounded by the number of projects, unlike hosts, which any
// client can invent); requests for no project count under project="".
type Metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	upstreamErrors *prometheus.CounterVec
	routeHosts     prometheus.Gauge
	routeUpdates   *prometheus.CounterVec
	routeAge       prometheus.Gauge

	// series caches the request series by project and code, so the fast
	// path counts a request without formatting a label or allocating.
	seriesMu sync.RWMutex
	series   map[seriesKey]requestSeries
}

type seriesKey struct {
	project uuid.UUID
	code    int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// NewMetrics registers the edge's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zeitwork_edge_requests_total", Help: "Requests the edge answered, by project and status code.",
		}, []string{"project", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "zeitwork_edge_request_duration_seconds", Help: "Time from request to response headers, by project.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"project"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zeitwork_edge_upstream_errors_total", Help: "Failed attempts to reach an instance, by project and reason (refused, timeout, error, instance_gone); retried attempts count too.",
		}, []string{"project", "reason"}),
		routeHosts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zeitwork_edge_route_hosts", Help: "Host names in the current route table.",
		}),
		routeUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zeitwork_edge_route_updates_total", Help: "Route table rebuilds, by result (ok, error).",
		}, []string{"result"}),
		routeAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zeitwork_edge_route_table_updated_timestamp_seconds", Help: "When the route table was last rebuilt from the database.",
		}),
	}
	loopWakeups := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "zeitwork_edge_loop_wakeups_total", Help: "Event loops woken by another after waiting 500 µs with events ready (no thread was watching Go's poller).",
	}, func() float64 { return float64(loopWakeups.Load()) })
	loopParks := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "zeitwork_edge_loop_parks_total", Help: "Times an event loop found nothing ready (after EDGE_LOOP_SPIN) and parked until woken.",
	}, func() float64 { return float64(loopParks.Load()) })
	reg.MustRegister(m.requests, m.duration, m.upstreamErrors, m.routeHosts, m.routeUpdates, m.routeAge, loopWakeups, loopParks)
	return m
}

func (m *Metrics) request(project string, code int, took time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(project, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(project).Observe(took.Seconds())
}

// requestFast is request for the fast path.
func (m *Metrics) requestFast(project uuid.UUID, code int, took time.Duration) {
	if m == nil {
		return
	}
	k := seriesKey{project, code}
	m.seriesMu.RLock()
	s, ok := m.series[k]
	m.seriesMu.RUnlock()
	if !ok {
		name := project.String()
		s = requestSeries{m.requests.WithLabelValues(name, strconv.Itoa(code)), m.duration.WithLabelValues(name)}
		m.seriesMu.Lock()
		if m.series == nil {
			m.series = map[seriesKey]requestSeries{}
		}
		m.series[k] = s
		m.seriesMu.Unlock()
	}
	s.count.Inc()
	s.duration.Observe(took.Seconds())
}

func (m *Metrics) upstreamError(project, reason string) {
	if m == nil {
		return
	}
	m.upstreamErrors.WithLabelValues(project, reason).Inc()
}

func (m *Metrics) tableUpdated(t *Table, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.routeUpdates.WithLabelValues("error").Inc()
		return
	}
	m.routeUpdates.WithLabelValues("ok").Inc()
	m.routeHosts.Set(float64(t.Hosts()))
	m.routeAge.SetToCurrentTime()
}
