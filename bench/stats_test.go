package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// unit says how a figure's values are read and printed.
type unit int

const (
	seconds unit = iota // a duration, in seconds
	ratio               // a dimensionless multiple
	count               // packets, watches
	mebibytes
	perSecond
	msPerMinute // CPU milliseconds per minute of wall time
	bytes
)

// figure is one measured quantity: every run's value, and how it was got.
type figure struct {
	name   string
	unit   unit
	values []float64
	// limit sets the figure against its physical limit, e.g. "2.9 round
	// trips"; empty when there is none.
	limit string
	how   string // how it was measured, for the report
}

// summary is a figure's median, p99, min and max over its runs.
type summary struct {
	n                     int
	median, p99, min, max float64
}

// summarize uses nearest-rank percentiles: with fewer than 100 runs the
// p99 is the maximum, which is what a p99 over so few runs can honestly be.
func summarize(values []float64) summary {
	if len(values) == 0 {
		return summary{}
	}
	v := slices.Clone(values)
	slices.Sort(v)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[max(i, 0)]
	}
	return summary{n: len(v), median: rank(0.5), p99: rank(0.99), min: v[0], max: v[len(v)-1]}
}

func (f figure) summary() summary { return summarize(f.values) }

// format prints one value of unit u.
func (u unit) format(x float64) string {
	switch u {
	case seconds:
		return formatDuration(x)
	case ratio:
		return fmt.Sprintf("%.2f×", x)
	case count:
		return fmt.Sprintf("%.1f", x)
	case mebibytes:
		return fmt.Sprintf("%.1f MiB", x)
	case perSecond:
		return fmt.Sprintf("%.0f/s", x)
	case msPerMinute:
		return fmt.Sprintf("%.0f ms/min", x)
	case bytes:
		return fmt.Sprintf("%d B (%.1f MiB)", int64(x), x/(1<<20))
	}
	return fmt.Sprint(x)
}

func formatDuration(s float64) string {
	switch a := math.Abs(s); {
	case a < 1e-3:
		return fmt.Sprintf("%.0fµs", s*1e6)
	case a < 1:
		return fmt.Sprintf("%.2fms", s*1e3)
	}
	return fmt.Sprintf("%.3fs", s)
}

// secs turns durations into a figure's values.
func secs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// scaled divides every value by unit, e.g. durations by a round trip.
func scaled(values []float64, by float64) []float64 {
	out := make([]float64, len(values))
	for i, v := range values {
		out[i] = v / by
	}
	return out
}

// fmtRT says a figure's median in round trips.
func fmtRT(values []float64, rtt float64) string {
	return fmt.Sprintf("median = %.1f round trips", summarize(values).median/rtt)
}
