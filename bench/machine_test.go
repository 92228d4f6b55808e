package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machine describes where the figures were taken.
type machine struct {
	cpu      string // model name
	cores    int    // logical CPUs
	kernel   string // uname: sysname release version machine
	memory   string // MemTotal
	tempFS   string // filesystem type under the temporary directory (ZooKeeper's data)
	goVer    string
	loadavg1 string // /proc/loadavg when the run began
}

func readMachine() machine {
	m := machine{cores: runtime.NumCPU(), goVer: runtime.Version(), cpu: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus := 0
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				m.cpu = strings.TrimSpace(v)
			case "processor":
				cpus++
			}
		}
		if cpus > 0 {
			m.cores = cpus
		}
	}
	m.kernel = strings.Join([]string{
		procLine("/proc/sys/kernel/ostype"), procLine("/proc/sys/kernel/osrelease"),
		procLine("/proc/sys/kernel/version"), runtime.GOARCH}, " ")
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kib, err := strconv.ParseFloat(strings.TrimSuffix(value(string(b), "MemTotal:"), " kB"), 64); err == nil {
			m.memory = fmt.Sprintf("%.1f GiB", kib/(1<<20))
		}
	}
	m.tempFS = fsType(os.TempDir())
	m.loadavg1 = loadavg()
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// fsType is the type of the filesystem mounted deepest above dir, from
// /proc/self/mounts.
func fsType(dir string) string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "unknown"
	}
	best, typ := -1, "unknown"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mnt := f[1]
		if (dir == mnt || strings.HasPrefix(dir, strings.TrimSuffix(mnt, "/")+"/")) && len(mnt) > best {
			best, typ = len(mnt), f[2]
		}
	}
	return typ
}

// procLine is a one-line /proc file's content, as uname(1) shows it.
func procLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
