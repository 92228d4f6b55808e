package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/exitcode"
	"github.com/lockex/lockex/internal/identity"
	"github.com/lockex/lockex/internal/zklock"
)

// statusFree is --status's exit code for a lock nobody holds, so that a
// script can ask `if lockex --status ...` as it would ask `test`.
const statusFree = 1

// runStatus prints who holds the lock of cfg and who waits for it, and
// returns 0 if it is held, 1 if it is free, or 69 if ZooKeeper could not be
// read. It only reads: an operator may point it at any production lock,
// and a lock path that does not exist is not created.
func runStatus(ctx context.Context, cfg *config.Config, stdout io.Writer, log *slog.Logger) int {
	log = log.With("lock", cfg.Path)
	s, err := zklock.Connect(ctx, sessionOptions(cfg, log, nil))
	if err != nil {
		log.Error("cannot reach zookeeper", "err", err)
		return exitcode.Unavailable
	}
	defer s.Close()
	c, err := s.Inspect(ctx, cfg.Path)
	if err != nil {
		// Unreachable after the session was made, or refused (auth).
		log.Error("cannot read the lock", "err", err)
		return exitcode.Unavailable
	}
	st := newStatus(c, cfg.Concurrent)
	if cfg.Output == "json" {
		err = st.writeJSON(stdout)
	} else {
		err = st.writeTable(stdout, time.Now())
	}
	if err != nil {
		log.Error("cannot write the status", "err", err)
	}
	if !st.Held {
		return statusFree
	}
	return exitcode.OK
}

// statusReport is the output of --output json, one object:
//
//	lock     P, the lock's znode, as the client sees it (inside any chroot)
//	kind     "lock" or "semaphore"
//	size     how many may hold it at once: 1 for a lock, N for a semaphore;
//	         from ZooKeeper, or from --concurrent when ZooKeeper does not say
//	         (the lock path does not exist yet)
//	held     whether anyone holds it; lockex exits 0 if so, 1 if not
//	holders  the holding nodes: the lock's one, or the semaphore's leases,
//	         oldest first; never null
//	waiting  the queued nodes, next in line first; never null
//
// and each node:
//
//	node        its full path (a semaphore's waiters are under P-__lock__)
//	identifier  its data: hostname:pid for the original tool, that and
//	            lockex's version and pod for lockex (identity.Identity),
//	            anything for a kazoo client
//	host, pid   the identifier's parts, when it is the original tool's or
//	            lockex's; lockex_version, pod_namespace, pod_name, pod_uid
//	            and container too, when the node carries them
//	created     its creation time on the server, RFC 3339 in UTC
//	token       its czxid, the holder's LOCKEX_FENCING_TOKEN
//	position    its 1-based place in holders or waiting
type statusReport struct {
	Lock    string       `json:"lock"`
	Kind    string       `json:"kind"`
	Size    int          `json:"size"`
	Held    bool         `json:"held"`
	Holders []statusNode `json:"holders"`
	Waiting []statusNode `json:"waiting"`
}

type statusNode struct {
	Node       string `json:"node"`
	Identifier string `json:"identifier"`
	// The identifier read, for nodes of lockex and the original tool.
	Host         string    `json:"host,omitempty"`
	PID          int       `json:"pid,omitempty"`
	Version      string    `json:"lockex_version,omitempty"`
	PodNamespace string    `json:"pod_namespace,omitempty"`
	PodName      string    `json:"pod_name,omitempty"`
	PodUID       string    `json:"pod_uid,omitempty"`
	Container    string    `json:"container,omitempty"`
	Created      time.Time `json:"created"`
	Token        int64     `json:"token"`
	Position     int       `json:"position"`
}

// newStatus reads c; concurrent is --concurrent, which names the kind only
// when ZooKeeper does not.
func newStatus(c *zklock.Contenders, concurrent int) *statusReport {
	st := &statusReport{Lock: c.Path, Kind: "lock", Size: 1, Held: c.Held(),
		Holders: statusNodes(c.Holders), Waiting: statusNodes(c.Waiting)}
	switch {
	case c.Semaphore:
		st.Kind, st.Size = "semaphore", c.Size
	case c.Size == 0 && concurrent > 1:
		st.Kind, st.Size = "semaphore", concurrent
	}
	return st
}

func statusNodes(cs []zklock.Contender) []statusNode {
	out := make([]statusNode, 0, len(cs))
	for _, c := range cs {
		n := statusNode{Node: c.Node, Identifier: c.Identifier,
			Created: c.Created.UTC(), Token: c.Token, Position: c.Position}
		if id, ok := identity.Parse(c.Identifier); ok {
			n.Host, n.PID, n.Version = id.Host, id.PID, id.Version
			n.PodNamespace, n.PodName, n.PodUID, n.Container = id.Namespace, id.Pod, id.UID, id.Container
		}
		out = append(out, n)
	}
	return out
}

func (st *statusReport) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

// writeTable prints a title line, then one row per node, holders first,
// in the order of the JSON lists. IDENTIFIER is hostname:pid, or the whole
// node data when it is not lockex's or the original tool's; POD and
// CONTAINER are from lockex's node data, "-" when it has none; SINCE is
// local time and age:
//
//	/lockex/job (lock): held, 1 waiting
//	ROLE     NODE                                                            IDENTIFIER  POD         CONTAINER  SINCE                           TOKEN
//	holder   /lockex/job/7080c080982b4fc6980d279488f44543__lock__0000000000  web-0:1     prod/web-0  app        2026-11-26T09:16:05+01:00 (9s)  7
//	waiting  /lockex/job/2c14f40316374f839810ba4b548e5404__lock__0000000001  vm:10022    -           -          2026-11-26T09:16:06+01:00 (8s)  10
func (st *statusReport) writeTable(w io.Writer, now time.Time) error {
	kind := st.Kind
	if st.Kind == "semaphore" {
		kind = fmt.Sprintf("semaphore of %d", st.Size)
	}
	summary := "free"
	switch {
	case st.Held && st.Kind == "semaphore":
		summary = fmt.Sprintf("held, %d of %d leases", len(st.Holders), st.Size)
	case st.Held:
		summary = "held"
	}
	if n := len(st.Waiting); n > 0 {
		summary += fmt.Sprintf(", %d waiting", n)
	}
	if _, err := fmt.Fprintf(w, "%s (%s): %s\n", st.Lock, kind, summary); err != nil {
		return err
	}
	if len(st.Holders)+len(st.Waiting) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tNODE\tIDENTIFIER\tPOD\tCONTAINER\tSINCE\tTOKEN")
	for _, rows := range []struct {
		role  string
		nodes []statusNode
	}{{"holder", st.Holders}, {"waiting", st.Waiting}} {
		for _, n := range rows.nodes {
			who, pod, container := cell(n.Identifier), "-", "-"
			if n.Host != "" {
				who = cell(n.Host) + ":" + strconv.Itoa(n.PID)
			}
			switch {
			case n.PodName != "" && n.PodNamespace != "":
				pod = cell(n.PodNamespace) + "/" + cell(n.PodName)
			case n.PodName != "":
				pod = cell(n.PodName)
			}
			if n.Container != "" {
				container = cell(n.Container)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s (%s)\t%d\n", rows.role, n.Node, who, pod, container,
				n.Created.Local().Format(time.RFC3339), age(now.Sub(n.Created)), n.Token)
		}
	}
	return tw.Flush()
}

// cell keeps one node's data on one line of one column: a kazoo client's
// identifier can be anything, and an empty one would shift the columns.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// age rounds d to what a person reads at a glance; clocks of the server and
// this host may disagree by a little, so a negative age is shown as 0s.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
}
