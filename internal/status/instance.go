package status

import (
	"time"

	"github.com/lockex/lockex/internal/supervisor"
)

// Instance is /status's "instance": this lockex's own state, from a
// Snapshot, as docs/design.md §8 lists its fields.
type Instance struct {
	State       string     `json:"state"`
	Since       time.Time  `json:"since"`
	Description string     `json:"description"`
	Lock        string     `json:"lock"`
	MaxHolders  int        `json:"max_holders"`
	Held        bool       `json:"held"`
	Node        string     `json:"node,omitempty"`
	Token       int64      `json:"token,omitempty"`
	Pid         int        `json:"pid,omitempty"`
	Round       int        `json:"round"`
	Connected   bool       `json:"connected"`
	Lost        string     `json:"lost,omitempty"`
	Readiness   *Readiness `json:"readiness"`
	Health      *Health    `json:"health"`
	Standby     *Standby   `json:"standby"`
}

// Readiness is the workload's readiness check (--active-http,
// --active-tcp); null without one.
type Readiness struct {
	Check string `json:"check"`
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
}

// Health is the workload's health check (--health-url, --health-cmd);
// null without one.
type Health struct {
	Check     string `json:"check"`
	OK        bool   `json:"ok"`
	Failures  int    `json:"failures"`
	Threshold int    `json:"threshold"`
	Error     string `json:"error,omitempty"`
	Unhealthy bool   `json:"unhealthy"`
}

// Standby is the standby's own check (--standby-url, --standby-cmd, §4.7);
// null without one.
type Standby struct {
	Check string `json:"check"`
	// OK: the last check passed. Fit: it may queue (passed once and has
	// not failed Threshold times in a row since).
	OK        bool   `json:"ok"`
	Fit       bool   `json:"fit"`
	Failures  int    `json:"failures"`
	Threshold int    `json:"threshold"`
	Error     string `json:"error,omitempty"`
	// Left counts the times this run left the queue for failing it;
	// LeftError is why it left last.
	Left      int    `json:"left"`
	LeftError string `json:"left_error,omitempty"`
}

// Instance is s as /status shows it.
func (s Snapshot) Instance() Instance {
	in := Instance{
		State: s.State.String(), Since: s.Since.UTC(), Description: s.Describe(),
		Lock: s.Lock, MaxHolders: s.MaxHolders, Held: s.Held(), Round: s.Round, Connected: s.Connected,
	}
	if s.Node != "" {
		in.Node, in.Token = s.Node, s.Token
	}
	if s.State == supervisor.Running {
		in.Pid = s.Pid
	}
	if s.LockLost {
		in.Lost = s.Loss.String()
	}
	if s.Check != "" {
		in.Readiness = &Readiness{Check: s.Check, Ready: s.WorkloadReady, Error: s.CheckErr}
	}
	if s.HealthCheck != "" {
		in.Health = &Health{Check: s.HealthCheck, OK: s.HealthOK, Failures: s.HealthFailures,
			Threshold: s.HealthThreshold, Error: s.HealthErr, Unhealthy: s.Unhealthy}
	}
	if s.StandbyCheck != "" {
		in.Standby = &Standby{Check: s.StandbyCheck, OK: s.StandbyOK, Fit: s.StandbyFit, Failures: s.StandbyFailures,
			Threshold: s.StandbyThreshold, Error: s.StandbyErr, Left: s.StandbyLeft, LeftError: s.StandbyLeftErr}
	}
	return in
}
