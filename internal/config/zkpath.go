package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ParseHosts splits a ZooKeeper connection string, "h1:2181,[::1]:2182/chroot",
// into dialable host:port pairs and a chroot. go-zookeeper has no chroot and
// would dial "2181/chroot" as a port for ever, so lockex parses it itself.
func ParseHosts(s string) (servers []string, chroot string, err error) {
	hosts := s
	if i := strings.IndexByte(s, '/'); i >= 0 {
		hosts, chroot = s[:i], s[i:]
		if chroot == "/" {
			chroot = ""
		} else if err := checkPath(chroot); err != nil {
			return nil, "", fmt.Errorf("zkhosts %q: chroot: %w", s, err)
		}
	}
	for _, h := range strings.Split(hosts, ",") {
		server, err := parseHost(strings.TrimSpace(h))
		if err != nil {
			return nil, "", fmt.Errorf("zkhosts %q: %w", s, err)
		}
		servers = append(servers, server)
	}
	return servers, chroot, nil
}

func parseHost(h string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host")
	}
	host, port := h, "2181"
	switch {
	case strings.HasPrefix(h, "["):
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", fmt.Errorf("host %q: missing ]", h)
		}
		host = h[1:end]
		if rest := h[end+1:]; rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return "", fmt.Errorf("host %q: want [address]:port", h)
			}
			port = rest[1:]
		}
		if net.ParseIP(host) == nil {
			return "", fmt.Errorf("host %q: %q is not an IPv6 address", h, host)
		}
	case strings.Count(h, ":") > 1:
		return "", fmt.Errorf("host %q: put an IPv6 address in brackets, as [%s]:2181", h, h)
	case strings.Contains(h, ":"):
		host, port, _ = strings.Cut(h, ":")
	}
	if host == "" || strings.ContainsAny(host, " \t@?#") {
		return "", fmt.Errorf("host %q: bad host name", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("host %q: port %q is not a number from 1 to 65535", h, port)
	}
	return net.JoinHostPort(host, port), nil
}

// LockPath joins --lockpath and --lockid into P, the lock's znode path.
func LockPath(lockpath, lockid string) (string, error) {
	parent := "/" + strings.TrimPrefix(lockpath, "/")
	if err := checkPath(parent); err != nil {
		return "", fmt.Errorf("lockpath %q: %w", lockpath, err)
	}
	if strings.HasPrefix(parent+"/", "/zookeeper/") {
		return "", fmt.Errorf("lockpath %q: /zookeeper is ZooKeeper's own", lockpath)
	}
	if strings.Contains(lockid, "/") {
		return "", fmt.Errorf("lockid %q: a lock id is one znode name and may not contain /", lockid)
	}
	if err := checkName(lockid); err != nil {
		return "", fmt.Errorf("lockid %q: %w", lockid, err)
	}
	return parent + "/" + lockid, nil
}

// DerivedID is the lock id of a command run without --lockid: the same argv
// on every host gives the same lock. Unlike the original tool's salted
// Python hash(), it is stable across processes and keeps argv boundaries.
func DerivedID(argv []string) string {
	sum := sha256.Sum256([]byte(strings.Join(argv, "\x00")))
	return hex.EncodeToString(sum[:8])
}

func checkPath(p string) error {
	if p == "/" || !strings.HasPrefix(p, "/") {
		return fmt.Errorf("want an absolute path like /locks")
	}
	for _, name := range strings.Split(p[1:], "/") {
		if err := checkName(name); err != nil {
			return err
		}
	}
	return nil
}

// checkName rejects what ZooKeeper rejects in a znode name (its PathUtils
// rules), before anything is sent, so a typo fails at once with exit 64.
func checkName(name string) error {
	switch name {
	case "":
		return fmt.Errorf("empty znode name (a doubled or trailing /)")
	case ".", "..":
		return fmt.Errorf("%q is not allowed as a znode name", name)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("znode name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if r <= 0x1f || (r >= 0x7f && r <= 0x9f) || (r >= 0xd800 && r <= 0xf8ff) || (r >= 0xfff0 && r <= 0xffff) {
			return fmt.Errorf("znode name %q has the illegal character %U", name, r)
		}
	}
	return nil
}
