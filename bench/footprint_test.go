package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture.
const userHZ = 100

// measureFootprint runs holders whose workload sleeps, with lockex's
// defaults (so, pings and lease checks only), and reads /proc.
func (b *bench) measureFootprint() {
	b.section("Footprint: lockex holding a lock, its workload idle")
	holders := make([]*lockex, footprintHolders)
	for i := range holders {
		holders[i] = b.run([]string{"-z", b.addr, "-i", fmt.Sprintf("bench-idle-%d", i), "--log-format", "json", "--", "sleep", "3600"}, nil, nil)
	}
	for _, l := range holders {
		l.need("workload started", time.Minute)
	}
	time.Sleep(2 * time.Second) // past start-up
	type reading struct {
		ticks   float64
		ran     float64 // ns on a CPU, all threads
		hasRan  bool
		at      time.Time
		hwm, rs float64
	}
	read := func(pid int) reading {
		r := reading{at: time.Now()}
		r.ticks = cpuTicks(b, pid)
		r.ran, r.hasRan = schedRan(pid)
		r.hwm, r.rs = statusKiB(b, pid, "VmHWM:"), statusKiB(b, pid, "VmRSS:")
		return r
	}
	first := make([]reading, len(holders))
	for i, l := range holders {
		first[i] = read(l.pid())
	}
	time.Sleep(idleWindow)
	var hwm, rss, ticks, ran []float64
	for i, l := range holders {
		last := read(l.pid())
		perMinute := time.Minute.Seconds() / last.at.Sub(first[i].at).Seconds()
		hwm = append(hwm, last.hwm/1024)
		rss = append(rss, last.rs/1024)
		ticks = append(ticks, (last.ticks-first[i].ticks)*1000/userHZ*perMinute)
		if last.hasRan && first[i].hasRan {
			ran = append(ran, (last.ran-first[i].ran)/1e6*perMinute)
		}
	}
	for _, l := range holders {
		_ = l.cmd.Process.Signal(syscall.SIGTERM) // passed on to sleep; lockex exits with it
	}
	for _, l := range holders {
		l.end(time.Minute)
	}

	b.r.hwm = b.add(figure{name: "peak RSS (VmHWM)", unit: mebibytes, values: hwm, limit: "limit 15 MiB",
		how: fmt.Sprintf("%d lockex, each holding its own lock with default flags and `sleep 3600` as the workload; `VmHWM` of the lockex process from /proc/PID/status after %.0fs of holding. One value per process.", footprintHolders, idleWindow.Seconds())}).summary()
	b.add(figure{name: "RSS at the end", unit: mebibytes, values: rss,
		how: "`VmRSS` at the same moment."})
	b.r.cpu = b.add(figure{name: "CPU while idle (utime+stime)", unit: msPerMinute, values: ticks,
		how: fmt.Sprintf("utime+stime of the lockex process (/proc/PID/stat, all threads, in 10ms ticks) over %.0fs of holding, scaled to one minute. Idle means go-zookeeper's pings (every third of the 10s session timeout) and lockex's own check of its node (every third of the 6s it has before it must stop the workload).", idleWindow.Seconds())}).summary()
	if len(ran) > 0 {
		b.add(figure{name: "CPU while idle (schedstat)", unit: msPerMinute, values: ran,
			how: "The same from the run time in /proc/PID/task/*/schedstat (nanoseconds, summed over threads): finer than the ticks."})
	}
	b.add(figure{name: "stripped binary size", unit: bytes, values: []float64{float64(b.r.binSize)},
		how: "The lockex binary the bench built as `make build` does: `CGO_ENABLED=0 go build -trimpath -ldflags '-s -w -X …Version=…'`."})
	b.add(figure{name: "stripped binary size before the Kubernetes mode", unit: bytes, values: []float64{float64(b.r.binSizeBeforeKube)},
		how: "The same build of lockex at " + beforeKubeMode + ", the parent of the commit that added its pod patches (--active-label, later --deletion-cost), from the repository's history. The difference is an upper bound on what the Kubernetes mode costs: it includes everything built since."})
}

// cpuTicks is utime+stime of pid, from /proc/PID/stat.
func cpuTicks(b *bench, pid int) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.t.Fatal(err)
	}
	s := string(st)
	// After the command name, which may hold spaces: state is field 3, utime 14, stime 15.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return utime + stime
}

// schedRan is the time pid's threads have run, from their schedstat files,
// which exist only on kernels built with scheduler statistics.
func schedRan(pid int) (float64, bool) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, false
	}
	var sum float64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread is gone
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, false
		}
		ns, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false
		}
		sum += ns
	}
	return sum, true
}

// statusKiB is a "kB" line of /proc/PID/status.
func statusKiB(b *bench, pid int, key string) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.t.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(value(string(st), key), " kB"), 64)
	if err != nil {
		b.t.Fatalf("/proc/%d/status: no %s", pid, key)
	}
	return v
}
