package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lockex/lockex/internal/identity"
	"github.com/lockex/lockex/internal/zklock"
)

// Lock is who holds a lock and who waits for it, as ZooKeeper says:
// --status's output and /status's "lock" (docs/design.md §8), one object:
//
//	lock     P, the lock's znode, as the client sees it (inside any chroot)
//	kind     "lock" or "semaphore"
//	size     how many may hold it at once: 1 for a lock, N for a semaphore;
//	         from ZooKeeper, or from --concurrent when ZooKeeper does not say
//	         (the lock path does not exist yet)
//	held     whether anyone holds it; --status exits 0 if so, 1 if not
//	holders  the holding nodes: the lock's one, or the semaphore's leases,
//	         oldest first; never null
//	waiting  the queued nodes, next in line first; never null
//
// and each node:
//
//	node        its full path (a semaphore's waiters are under P-__lock__)
//	identifier  its data: hostname:pid for the original tool, that and
//	            lockex's version, pod, IP and since for lockex
//	            (identity.Identity), anything for a kazoo client
//	host, pid   the identifier's parts, when it is the original tool's or
//	            lockex's; lockex_version, pod_namespace, pod_name, pod_uid,
//	            container and ip too, when the node carries them
//	created     its creation time on the server, RFC 3339 in UTC
//	since       for a holder, when it got the lock, on the server's clock:
//	            a lease's creation time; for a lock's holder, the time
//	            lockex wrote into its node (since= in the identifier, §3.2);
//	            null when not known (a holder that is not lockex, or not
//	            yet, or older) and for waiters
//	token       its czxid, the holder's LOCKEX_FENCING_TOKEN
//	position    its 1-based place in holders or waiting
type Lock struct {
	Lock    string `json:"lock"`
	Kind    string `json:"kind"`
	Size    int    `json:"size"`
	Held    bool   `json:"held"`
	Holders []Node `json:"holders"`
	Waiting []Node `json:"waiting"`
}

// Node is one holder or waiter of a Lock.
type Node struct {
	Node       string `json:"node"`
	Identifier string `json:"identifier"`
	// The identifier read, for nodes of lockex and the original tool.
	Host         string     `json:"host,omitempty"`
	PID          int        `json:"pid,omitempty"`
	Version      string     `json:"lockex_version,omitempty"`
	PodNamespace string     `json:"pod_namespace,omitempty"`
	PodName      string     `json:"pod_name,omitempty"`
	PodUID       string     `json:"pod_uid,omitempty"`
	Container    string     `json:"container,omitempty"`
	IP           string     `json:"ip,omitempty"`
	Created      time.Time  `json:"created"`
	Since        *time.Time `json:"since"`
	Token        int64      `json:"token"`
	Position     int        `json:"position"`
}

// NewLock reads c; concurrent is --concurrent, which names the kind only
// when ZooKeeper does not.
func NewLock(c *zklock.Contenders, concurrent int) *Lock {
	st := &Lock{Lock: c.Path, Kind: "lock", Size: 1, Held: c.Held(),
		Holders: nodes(c.Holders, true, c.Semaphore), Waiting: nodes(c.Waiting, false, false)}
	switch {
	case c.Semaphore:
		st.Kind, st.Size = "semaphore", c.Size
	case c.Size == 0 && concurrent > 1:
		st.Kind, st.Size = "semaphore", concurrent
	}
	return st
}

// nodes converts cs; holders get a since: a lease's ctime, which is when
// it was taken, or the since a lock's holder wrote.
func nodes(cs []zklock.Contender, holders, leases bool) []Node {
	out := make([]Node, 0, len(cs))
	for _, c := range cs {
		n := Node{Node: c.Node, Identifier: c.Identifier,
			Created: c.Created.UTC(), Token: c.Token, Position: c.Position}
		id, ok := identity.Parse(c.Identifier)
		if ok {
			n.Host, n.PID, n.Version = id.Host, id.PID, id.Version
			n.PodNamespace, n.PodName, n.PodUID, n.Container, n.IP = id.Namespace, id.Pod, id.UID, id.Container, id.IP
		}
		switch {
		case !holders:
		case leases:
			created := n.Created
			n.Since = &created
		case ok && !id.Since.IsZero():
			since := id.Since.UTC()
			n.Since = &since
		}
		out = append(out, n)
	}
	return out
}

// WriteJSON writes st as --status --output json prints it.
func (st *Lock) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

// WriteTable prints a title line, then one row per node, holders first,
// in the order of the JSON lists. IDENTIFIER is hostname:pid, or the whole
// node data when it is not lockex's or the original tool's; POD, IP and
// CONTAINER are from lockex's node data, "-" when it has none; SINCE is,
// in local time and age, when a holder got the lock ("-" when that is not
// known) and when a waiter queued:
//
//	/lockex/job (lock): held, 1 waiting
//	ROLE     NODE                                                            IDENTIFIER  POD         IP         CONTAINER  SINCE                           TOKEN
//	holder   /lockex/job/7080c080982b4fc6980d279488f44543__lock__0000000000  web-0:1     prod/web-0  192.0.2.3  app        2026-11-26T09:16:05+01:00 (9s)  7
//	waiting  /lockex/job/2c14f40316374f839810ba4b548e5404__lock__0000000001  vm:10022    -           -          -          2026-11-26T09:16:06+01:00 (8s)  10
func (st *Lock) WriteTable(w io.Writer, now time.Time) error {
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
	fmt.Fprintln(tw, "ROLE\tNODE\tIDENTIFIER\tPOD\tIP\tCONTAINER\tSINCE\tTOKEN")
	for _, rows := range []struct {
		role  string
		nodes []Node
	}{{"holder", st.Holders}, {"waiting", st.Waiting}} {
		for _, n := range rows.nodes {
			who, pod := cell(n.Identifier), "-"
			if n.Host != "" {
				who = cell(n.Host) + ":" + strconv.Itoa(n.PID)
			}
			switch {
			case n.PodName != "" && n.PodNamespace != "":
				pod = cell(n.PodNamespace) + "/" + cell(n.PodName)
			case n.PodName != "":
				pod = cell(n.PodName)
			}
			since := "-"
			switch {
			case rows.role == "waiting":
				since = when(n.Created, now)
			case n.Since != nil:
				since = when(*n.Since, now)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", rows.role, n.Node, who, pod, cell(n.IP), cell(n.Container), since, n.Token)
		}
	}
	return tw.Flush()
}

// when is t in local time and its age at now.
func when(t, now time.Time) string {
	return t.Local().Format(time.RFC3339) + " (" + age(now.Sub(t)) + ")"
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
