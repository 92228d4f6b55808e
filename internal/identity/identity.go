// Package identity is who wrote a lock node: the one line of text lockex
// stores as the data of every node it creates (docs/design.md §3.1), and
// the rule by which a restarted lockex recognises the nodes of its own dead
// earlier incarnation (§3.4).
//
// The line starts as the original tool's data did, hostname:pid, so that
// kazoo's contenders(), which shows a node's data as text, and anyone who
// reads the first word still see who it is:
//
//	HOST:PID lockex/VERSION [pod=[NAMESPACE/]NAME] [uid=UID] [container=NAME] [ip=ADDR] [since=TIME]
//
// Words are separated by one space and come in this order; each optional
// word is there when its value is known. since is not who but when: a
// mutex holder adds it to its node once it knows when it got the lock
// (WithSince), because the node's own times cannot say it (docs/design.md
// §3.2). A byte of a value outside the
// printable ASCII range, a space, '%', or a separator of that word (':' in
// HOST, '/' in NAMESPACE) is written as %XX, so the line stays one line of
// ASCII whatever the environment holds.
package identity

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Identity is what a node's data says about the process that created it.
type Identity struct {
	Host string
	PID  int
	// Version is lockex's version; "" for a node of the original tool
	// (hostname:pid and nothing else).
	Version   string
	Namespace string // the pod's namespace, "" if not known
	Pod       string // the pod's name, "" if not known
	UID       string // the pod's UID (metadata.uid), "" if not known
	Container string // the container's name in the pod, "" if not known
	IP        string // the pod's IP (status.podIP), "" if not known
	// Since is when the node's creator got the lock, on the ZooKeeper
	// leader's clock, to the millisecond; zero if not known (a waiter, or
	// a holder that has not said yet).
	Since time.Time
}

// sinceLayout is the one form of since: UTC, milliseconds, so that a
// person reading kazoo's contenders() reads it too.
const sinceLayout = "2006-01-02T15:04:05.000Z"

// String is the node data for id, in the one form Parse accepts back.
func (id Identity) String() string {
	var b strings.Builder
	b.WriteString(escape(id.Host, ":"))
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(id.PID))
	if id.Version == "" {
		return b.String()
	}
	b.WriteString(" lockex/")
	b.WriteString(escape(id.Version, ""))
	switch {
	case id.Pod != "" && id.Namespace != "":
		b.WriteString(" pod=" + escape(id.Namespace, "/") + "/" + escape(id.Pod, "/"))
	case id.Pod != "":
		b.WriteString(" pod=" + escape(id.Pod, "/"))
	}
	if id.UID != "" {
		b.WriteString(" uid=" + escape(id.UID, ""))
	}
	if id.Container != "" {
		b.WriteString(" container=" + escape(id.Container, ""))
	}
	if id.IP != "" {
		b.WriteString(" ip=" + escape(id.IP, ""))
	}
	if !id.Since.IsZero() {
		b.WriteString(" since=" + id.Since.UTC().Format(sinceLayout))
	}
	return b.String()
}

// Parse reads node data. It accepts only the exact form String writes
// (the original tool's hostname:pid is one such form), so ok is false for
// anything else a kazoo client may have stored, even text that contains a
// lockex identity.
func Parse(data string) (id Identity, ok bool) {
	words := strings.Split(data, " ")
	hostPID := words[0]
	i := strings.LastIndexByte(hostPID, ':')
	if i < 0 {
		return Identity{}, false
	}
	var err error
	if id.Host, err = unescape(hostPID[:i]); err != nil || id.Host == "" {
		return Identity{}, false
	}
	if id.PID, err = strconv.Atoi(hostPID[i+1:]); err != nil || id.PID < 0 {
		return Identity{}, false
	}
	if len(words) > 1 {
		v, found := strings.CutPrefix(words[1], "lockex/")
		if !found {
			return Identity{}, false
		}
		if id.Version, err = unescape(v); err != nil {
			return Identity{}, false
		}
	}
	for _, w := range words[min(2, len(words)):] {
		key, v, found := strings.Cut(w, "=")
		if !found {
			return Identity{}, false
		}
		switch key {
		case "pod":
			ns, name, hasNS := strings.Cut(v, "/")
			if !hasNS {
				ns, name = "", v
			}
			if id.Namespace, err = unescape(ns); err != nil {
				return Identity{}, false
			}
			if id.Pod, err = unescape(name); err != nil {
				return Identity{}, false
			}
		case "uid":
			id.UID, err = unescape(v)
		case "container":
			id.Container, err = unescape(v)
		case "ip":
			var ip netip.Addr
			if ip, err = netip.ParseAddr(v); err == nil {
				id.IP = ip.String()
			}
		case "since":
			id.Since, err = time.Parse(sinceLayout, v)
		default:
			return Identity{}, false
		}
		if err != nil {
			return Identity{}, false
		}
	}
	// Anything that does not read back as written (a word twice, out of
	// order, empty, escaped differently) is not lockex's.
	if id.String() != data {
		return Identity{}, false
	}
	return id, true
}

// WithSince is data, a node's identity, with since set to when the node's
// holder got the lock; data that is not an identity is returned as it is,
// so that nothing but an identity is ever written for one.
func WithSince(data []byte, since time.Time) []byte {
	id, ok := Parse(string(data))
	if !ok || id.Version == "" {
		return data
	}
	id.Since = since
	return []byte(id.String())
}

// CanTakeOver reports whether self, a lockex just started, may delete a
// node whose data is other's: the node was written by an earlier
// incarnation of the same container, which is dead. It holds only when
// both know the pod's UID and the container's name and were PID 1 of
// their PID namespace, and agree on host, pod and container: a container
// has one PID 1 at a time, and is restarted only once all its processes
// are gone. The versions may differ (a new image in the same pod), and
// so may IP and Since, which say where and since when, not who.
// Whether the node's session is another than self's is for the caller.
func (self Identity) CanTakeOver(other Identity) bool {
	return self.UID != "" && self.Container != "" && self.PID == 1 && self.Version != "" &&
		other.PID == 1 && other.Version != "" &&
		other.UID == self.UID && other.Container == self.Container &&
		other.Host == self.Host && other.pod() == self.pod()
}

// pod is the pod's namespace and name as String writes them: a namespace
// without a name is not written, so a node never reads back with one.
func (id Identity) pod() [2]string {
	if id.Pod == "" {
		return [2]string{}
	}
	return [2]string{id.Namespace, id.Pod}
}

// escape writes the bytes of s that would break the line as %XX: those
// outside printable ASCII, space, '%', and seps.
func escape(s, seps string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '%' || strings.IndexByte(seps, c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("short escape in %q", s)
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}
