package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// statusPage is /status's answer, as a dashboard reads it.
type statusPage struct {
	Instance struct {
		State      string    `json:"state"`
		Since      time.Time `json:"since"`
		Lock       string    `json:"lock"`
		MaxHolders int       `json:"max_holders"`
		Held       bool      `json:"held"`
		Node       string    `json:"node"`
		Token      int64     `json:"token"`
		Pid        int       `json:"pid"`
		Round      int       `json:"round"`
		Connected  bool      `json:"connected"`
		Health     *struct {
			Check     string `json:"check"`
			OK        bool   `json:"ok"`
			Failures  int    `json:"failures"`
			Threshold int    `json:"threshold"`
			Error     string `json:"error"`
			Unhealthy bool   `json:"unhealthy"`
		} `json:"health"`
		Standby *struct {
			Check     string `json:"check"`
			OK        bool   `json:"ok"`
			Fit       bool   `json:"fit"`
			Failures  int    `json:"failures"`
			Threshold int    `json:"threshold"`
			Error     string `json:"error"`
			Left      int    `json:"left"`
			LeftError string `json:"left_error"`
		} `json:"standby"`
	} `json:"instance"`
	Lock           *statusJSON `json:"lock"`
	ZooKeeperError string      `json:"zookeeper_error"`
}

// getStatus asks addr's /status; it must answer 200, JSON, not cached.
func getStatus(t *testing.T, addr string) statusPage {
	t.Helper()
	page, err := tryStatus(addr)
	if err != nil {
		t.Fatal(err)
	}
	return page
}

// tryStatus asks addr's /status, for a caller that waits for lockex to
// serve; an answer that is not 200, JSON and no-store is an error too.
func tryStatus(addr string) (statusPage, error) {
	var page statusPage
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/status")
	if err != nil {
		return page, fmt.Errorf("/status on %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Content-Type") != "application/json" {
		return page, fmt.Errorf("/status on %s: %d, headers %v; want 200, JSON, no-store", addr, resp.StatusCode, resp.Header)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return page, fmt.Errorf("/status on %s: no JSON: %w", addr, err)
	}
	return page, nil
}

// podEnv is a pod's identity as the chart gives it. The IP is only
// written into nodes, never connected to: the documentation range.
func podEnv(name, ip string) []string {
	return []string{"LOCKEX_POD_NAMESPACE=prod", "LOCKEX_POD_NAME=" + name, "LOCKEX_POD_IP=" + ip}
}

// TestStatusEndpoint: /status on the holder and on a standby name the same
// holder, by pod, IP and version, since when it holds (after its node was
// made, within the test), with the fencing token its workload was given,
// and the standby in the queue; each says its own state.
func TestStatusEndpoint(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=api"}
	conn := zkClient(t, zk.Hosts())
	tokenFile := filepath.Join(t.TempDir(), "token")
	start := time.Now().Truncate(time.Millisecond)
	holderAddr, standbyAddr := freePort(t), freePort(t)
	holder := startLockex(t, append(slices.Clone(env), podEnv("web-0", "192.0.2.10")...), "--http-addr", holderAddr,
		"--", "sh", "-c", `echo "$LOCKEX_FENCING_TOKEN" > `+tokenFile+`; exec sleep 60`)
	eventually(t, 20*time.Second, "the holder's workload runs", func() bool { _, err := os.Stat(tokenFile); return err == nil })
	standby := startLockex(t, append(slices.Clone(env), podEnv("web-1", "192.0.2.11")...), "--http-addr", standbyAddr, "--", "true")
	eventually(t, 20*time.Second, "the standby queued", func() bool { return len(children(t, conn, "/lockex/api")) == 2 })
	saysSince(t, conn, "/lockex/api")
	raw, _ := os.ReadFile(tokenFile)
	token, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		t.Fatalf("the workload's LOCKEX_FENCING_TOKEN %q: %v", raw, err)
	}

	pages := map[string]statusPage{}
	for who, addr := range map[string]string{"holder": holderAddr, "standby": standbyAddr} {
		page := getStatus(t, addr)
		pages[who] = page
		b, _ := json.MarshalIndent(page, "", "  ")
		t.Logf("/status of the %s:\n%s", who, b)
		if page.ZooKeeperError != "" || page.Lock == nil {
			t.Fatalf("%s: zookeeper_error %q, lock %v; want the lock", who, page.ZooKeeperError, page.Lock)
		}
		l := page.Lock
		if l.Lock != "/lockex/api" || l.Kind != "lock" || !*l.Held || len(l.Holders) != 1 || len(l.Waiting) != 1 {
			t.Fatalf("%s: lock %+v, want one holder and one waiting", who, l)
		}
		h, w := l.Holders[0], l.Waiting[0]
		if h.PodNamespace != "prod" || h.PodName != "web-0" || h.IP != "192.0.2.10" || h.Version != lockexVersion ||
			h.PID != holder.cmd.Process.Pid || h.Token != token || h.Position != 1 {
			t.Errorf("%s: holder %+v, want pod prod/web-0 at 192.0.2.10, version %s, token %d", who, h, lockexVersion, token)
		}
		if h.Since == nil || h.Since.Before(h.Created) || h.Since.Before(start) || time.Since(*h.Since) < 0 || h.Created.Before(start) {
			t.Errorf("%s: holder created %s, since %v; want start %s ≤ created ≤ since ≤ now", who, h.Created, h.Since, start)
		}
		if w.PodName != "web-1" || w.IP != "192.0.2.11" || w.PID != standby.cmd.Process.Pid || w.Since != nil || w.Position != 1 || w.Token <= token {
			t.Errorf("%s: waiting %+v, want the standby web-1 at 192.0.2.11, no since", who, w)
		}
	}
	if h, s := pages["holder"].Lock.Holders[0], pages["standby"].Lock.Holders[0]; h.Node != s.Node || !h.Since.Equal(*s.Since) {
		t.Errorf("holder and standby disagree: %+v, %+v", h, s)
	}
	in := pages["holder"].Instance
	if in.State != "running" || !in.Held || in.Token != token || in.Node != pages["holder"].Lock.Holders[0].Node || in.Lock != "/lockex/api" ||
		!in.Connected || in.Pid == 0 || in.Round != 1 || in.Health != nil {
		t.Errorf("holder's own state %+v, want running with its node and token", in)
	}
	if in := pages["standby"].Instance; in.State != "waiting" || in.Held || in.Token != 0 || in.Node != "" || !in.Connected {
		t.Errorf("standby's own state %+v, want waiting", in)
	}
}

// TestStatusEndpointSemaphore: a waiter's /status shows both leases of a
// semaphore of 2, each since it was taken, and itself in the queue.
func TestStatusEndpointSemaphore(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=apisem"}
	conn := zkClient(t, zk.Hosts())
	var pids []int
	for i := range 2 {
		h := startLockex(t, append(slices.Clone(env), podEnv(fmt.Sprintf("web-%d", i), fmt.Sprintf("192.0.2.%d", 10+i))...), "-c", "2", "--", "sleep", "60")
		pids = append(pids, h.cmd.Process.Pid)
		eventually(t, 20*time.Second, fmt.Sprintf("lease %d held", i+1), func() bool { return len(children(t, conn, "/lockex/apisem")) == i+1 })
	}
	addr := freePort(t)
	w := startLockex(t, append(slices.Clone(env), podEnv("web-2", "192.0.2.12")...), "-c", "2", "--http-addr", addr, "--", "true")
	var page statusPage
	eventually(t, 20*time.Second, "the third contender queued", func() bool {
		var err error
		page, err = tryStatus(addr)
		return err == nil && page.Lock != nil && len(page.Lock.Waiting) == 1 && page.Lock.Waiting[0].PID == w.cmd.Process.Pid
	})
	l := page.Lock
	if l.Kind != "semaphore" || l.Size != 2 || len(l.Holders) != 2 || page.Instance.State != "waiting" || page.Instance.MaxHolders != 2 {
		t.Fatalf("/status %+v, want a semaphore of 2, both held, this one waiting", page)
	}
	for i, h := range l.Holders {
		if h.PID != pids[i] || h.PodName != fmt.Sprintf("web-%d", i) || h.IP != fmt.Sprintf("192.0.2.%d", 10+i) || h.Since == nil || !h.Since.Equal(h.Created) {
			t.Errorf("lease %d = %+v, want web-%d's, since it was created", i+1, h, i)
		}
	}
}

// TestStatusEndpointZooKeeperDown: with ZooKeeper stopped, or frozen so
// that it answers nothing, /status still answers 200 at once, or within
// its bound of 2s, with the instance's own state and zookeeper_error
// instead of the lock.
func TestStatusEndpointZooKeeperDown(t *testing.T) {
	for _, how := range []string{"stopped", "frozen"} {
		t.Run(how, func(t *testing.T) {
			zk := startZK(t)
			env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=apidown"}
			addr := freePort(t)
			startLockex(t, env, "--http-addr", addr, "--", "sleep", "60")
			eventually(t, 20*time.Second, "the holder runs and reads the lock", func() bool {
				p, err := tryStatus(addr)
				return err == nil && p.Instance.State == "running" && p.Lock != nil && len(p.Lock.Holders) == 1
			})
			server := zk.Servers[0]
			if how == "stopped" {
				if err := server.Stop(); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := server.Pause(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = server.Resume() })
			}
			// The last read may be served again for up to a second; then
			// every answer says ZooKeeper could not be read.
			deadline := time.Now().Add(20 * time.Second)
			for {
				asked := time.Now()
				p := getStatus(t, addr)
				took := time.Since(asked)
				if p.Lock == nil {
					t.Logf("answered in %s: state %s, zookeeper_error %q", took.Round(time.Millisecond), p.Instance.State, p.ZooKeeperError)
					if p.ZooKeeperError == "" || p.Instance.Lock != "/lockex/apidown" || p.Instance.State == "" {
						t.Errorf("/status %+v, want the own state and zookeeper_error", p)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("/status still shows the lock 20s after zookeeper went: %+v", p)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}
