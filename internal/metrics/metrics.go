// Package metrics turns the state changes that package status records into
// the Prometheus metrics of docs/design.md §9, on a registry of lockex's own.
package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
	"github.com/lockex/lockex/internal/zklock"
)

// Metrics keeps the metrics; status.Recorder tells it of every change.
type Metrics struct {
	held, contenders, maxHolders, connected, running, ready, healthy prometheus.Gauge
	standbyReady                                                     prometheus.Gauge
	wait                                                             prometheus.Observer
	lost                                                             *prometheus.CounterVec
	disconnects, expirations, maxRuntime, requeues                   prometheus.Counter
	healthFailures, unhealthy, earlierDeleted, podPatchFailures      prometheus.Counter
	standbyFailures                                                  prometheus.Counter
}

// New registers lockex's metrics for lock P, and the Go and process
// collectors, on a new registry. logDropped counts the log lines dropped
// so far (logging.Writer.Dropped).
func New(lock string, maxHolders int, version string, logDropped func() uint64) (*Metrics, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{reg: reg, labels: prometheus.Labels{"lock": lock}}
	m := &Metrics{
		held:       f.gauge("lockex_lock_held", "1 while this instance holds the lock or a lease."),
		contenders: f.gauge("lockex_lock_contenders", "Contenders (mutex) or lease holders (semaphore) last seen."),
		maxHolders: f.gauge("lockex_lock_max_holders", "Holders allowed at once: 1 for a mutex, N for a semaphore."),
		connected:  f.gauge("lockex_zk_connected", "1 while connected to ZooKeeper with a live session."),
		running:    f.gauge("lockex_workload_running", "1 while the workload runs."),
		ready:      f.gauge("lockex_workload_ready", "1 while /active answers 200: the workload runs and passes --active-http or --active-tcp (runs, without a check)."),
		healthy:    f.gauge("lockex_workload_healthy", "1 while the workload runs and passed its last --health-url or --health-cmd check (runs, without a check)."),
		standbyReady: f.gauge("lockex_standby_ready",
			"1 while this standby, checking or queued, passes its --standby-url or --standby-cmd check: it may queue, or stays queued."),
		standbyFailures: f.counter("lockex_standby_check_failures_total",
			"Failed standby checks (--standby-url, --standby-cmd), before queueing and while queued."),
		wait: f.histogram("lockex_lock_wait_seconds", "Time from lockex's start (the round's, with --requeue) until the lock was held.",
			prometheus.ExponentialBuckets(0.01, 4, 10)), // 10ms to about 45 minutes
		lost:        f.counterVec("lockex_lock_lost_total", "Locks lost, by reason.", "reason"),
		disconnects: f.counter("lockex_zk_disconnects_total", "Connection losses to ZooKeeper."),
		expirations: f.counter("lockex_zk_session_expirations_total", "ZooKeeper sessions expired."),
		maxRuntime:  f.counter("lockex_workload_max_runtime_exceeded_total", "Workloads that ran for --max-runtime and were stopped."),
		requeues:    f.counter("lockex_lock_requeues_total", "Rounds begun again after a backoff (--requeue)."),
		healthFailures: f.counter("lockex_health_check_failures_total",
			"Failed health checks of the workload (--health-url, --health-cmd), counted toward the threshold or not."),
		unhealthy: f.counter("lockex_workload_unhealthy_total",
			"Workloads stopped, and the lock given up, because they failed their health check --health-failure-threshold times in a row."),
		earlierDeleted: f.counter("lockex_earlier_nodes_deleted_total",
			"Nodes of this container's earlier, dead incarnation (same pod UID and container name, another session) deleted at start, so that the next in line took over without waiting for that session to expire."),
		podPatchFailures: f.counter("lockex_pod_patch_failures_total",
			"Requests to the Kubernetes API server for --active-label and --deletion-cost that it refused or that did not reach it: patches of lockex's own pod, and reads and patches of the pod of a holder it took over from."),
	}
	m.maxHolders.Set(float64(maxHolders))
	// Each reason's series exists from the start at 0, so that an alert
	// on increase() fires on the first loss too.
	for _, l := range zklock.Losses {
		m.lost.WithLabelValues(l.String())
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lockex_build_info", Help: "1, labelled with lockex's version and the Go version it was built with.",
		ConstLabels: f.labels,
	}, []string{"version", "goversion"})
	reg.MustRegister(build)
	build.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "lockex_log_lines_dropped_total",
		Help:        "Log lines dropped because stderr did not take them (a pipe nobody drains, a stalled log collector) or refused them.",
		ConstLabels: f.labels,
	}, func() float64 { return float64(logDropped()) }))
	return m, reg
}

// Observe updates the metrics for one change and the state after it.
func (m *Metrics) Observe(ev status.Event, s status.Snapshot) {
	m.held.Set(bool01(s.Held()))
	m.running.Set(bool01(s.State == supervisor.Running))
	m.ready.Set(bool01(s.Active()))
	m.healthy.Set(bool01(s.Healthy()))
	m.standbyReady.Set(bool01(s.StandbyReady()))
	m.connected.Set(bool01(s.Connected))
	m.contenders.Set(float64(s.Contenders))
	switch ev {
	case status.EvAcquired:
		m.wait.Observe(s.WaitedSinceStart.Seconds())
	case status.EvLost:
		m.lost.WithLabelValues(s.Loss.String()).Inc()
	case status.EvDisconnected:
		m.disconnects.Inc()
	case status.EvExpired:
		m.expirations.Inc()
	case status.EvMaxRuntime:
		m.maxRuntime.Inc()
	case status.EvRequeued:
		m.requeues.Inc()
	case status.EvHealthFailed:
		m.healthFailures.Inc()
	case status.EvUnhealthy:
		m.unhealthy.Inc()
	case status.EvStandbyFailed:
		m.standbyFailures.Inc()
	case status.EvEarlierDeleted:
		m.earlierDeleted.Inc()
	}
}

// PodPatchFailed counts a patch of the pod, or a read or patch of a
// previous holder's, that failed. The lock never waits on the API server;
// this is how one sees that it did not answer.
func (m *Metrics) PodPatchFailed() { m.podPatchFailures.Inc() }

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// factory makes collectors labelled with the lock and registers them.
type factory struct {
	reg    *prometheus.Registry
	labels prometheus.Labels
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: f.labels})
	f.reg.MustRegister(g)
	return g
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: f.labels})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, label string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: f.labels}, []string{label})
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: f.labels, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}
