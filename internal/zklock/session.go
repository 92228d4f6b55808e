// Package zklock holds lockex's ZooKeeper session and the lock recipes built
// on it: a mutex and a semaphore whose znodes are laid out exactly as
// kazoo's Lock and Semaphore lay them out, so the two exclude each other.
//
// The recipes are written on zk.Conn rather than on go-zookeeper's own Lock,
// which takes no context, cannot be cancelled, and leaves its node behind
// when a call after the create fails.
package zklock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

var (
	// ErrUnreachable means no session could be established in time.
	ErrUnreachable = errors.New("zklock: zookeeper unreachable")
	// ErrBusy means the lock was taken and the caller chose not to wait.
	ErrBusy = errors.New("zklock: lock is taken")
	// ErrSizeMismatch means a semaphore's size differs from the one stored.
	ErrSizeMismatch = errors.New("zklock: semaphore size mismatch")
	// ErrNotAuthorized means ZooKeeper refused an operation for the ACLs:
	// no, or the wrong, digest credentials.
	ErrNotAuthorized = errors.New("zklock: not authorized by zookeeper")
)

// Options configure a session.
type Options struct {
	Servers        []string // host:port pairs
	Chroot         string   // prefix of every path, "" for none
	SessionTimeout time.Duration
	ConnectTimeout time.Duration // per attempt
	Attempts       int           // connection attempts before giving up
	Retries        int           // retries of a failed operation
	// StopGrace is how long the lock holder needs to stop its work once
	// told the lock is at risk: a lease's Done closes that long, plus a
	// tenth of the granted session timeout, before the server could expire
	// the session.
	StopGrace time.Duration
	Logger    *slog.Logger
	// Observer is told of the session's changes; nil for none.
	Observer SessionObserver
	// User and Password, when set, are sent as digest auth on every
	// connection, and lockex's nodes are then created creator-only, plus
	// readable by anyone with WorldRead.
	User, Password string
	WorldRead      bool
	// TLS, when set, is the configuration for TLS to the servers (their
	// secure client port).
	TLS *tls.Config
	// EarlierSelf, when set, reports whether a node's data names an
	// earlier incarnation of this contender, which is dead for sure: a
	// recipe deletes such nodes of other sessions before it queues
	// (takeOver). Nil: no node is ever taken over.
	EarlierSelf func(data []byte) bool
	// HeldSince, when set, is the data a mutex holder writes into its node
	// from its second beat on: its data as created, with since, when the
	// first beat's write was committed, the moment it held. Nil: the data
	// stays as created.
	HeldSince func(data []byte, since time.Time) []byte
	// Behind, when set, is told the data of every node a mutex contender
	// waits directly behind, as it sets its watch on it: the holder it
	// takes over from is the last one it was told of. It must not block.
	// Not told for a semaphore.
	Behind func(data []byte)
}

// SessionObserver is told what the session and the recipes see, for logs, metrics
// and probes. Its methods must not block: some run on go-zookeeper's event
// goroutine.
type SessionObserver interface {
	Connecting(servers []string, timeout time.Duration)
	Connected(server string, session int64, granted time.Duration)
	Disconnected()
	Reconnected(server string)
	Expired()
	// Contenders is how many contenders (a semaphore: lease holders) a
	// recipe saw; Waiting, that the lock is taken, with ahead before us.
	Contenders(n int)
	Waiting(ahead int)
	// EarlierDeleted: the node of an earlier incarnation at node, with
	// data identifier and owned by session, was deleted (takeOver).
	EarlierDeleted(node, identifier string, session int64)
	// Silent, while a lease is held: true once the evidence that the
	// session lives is older than half the holder's budget (or more, see
	// liveness.silence), so the lease may be lost before long; false once
	// it is young again. Nothing is said as the lease ends.
	Silent(silent bool)
}

type nopObserver struct{}

func (nopObserver) Connecting([]string, time.Duration)     {}
func (nopObserver) Connected(string, int64, time.Duration) {}
func (nopObserver) Disconnected()                          {}
func (nopObserver) Reconnected(string)                     {}
func (nopObserver) Expired()                               {}
func (nopObserver) Contenders(int)                         {}
func (nopObserver) Waiting(int)                            {}
func (nopObserver) EarlierDeleted(string, string, int64)   {}
func (nopObserver) Silent(bool)                            {}

// Session is one ZooKeeper session. The recipes built on it never watch the
// connection themselves; they ask the session to wait for it.
type Session struct {
	opts Options
	conn *zk.Conn
	log  *slog.Logger
	obs  SessionObserver
	acl  []zk.ACL // what lockex's nodes are created with

	live liveness      // what the wire shows: granted timeout, evidence
	quit chan struct{} // closed by Close: the heartbeat ends
	stop sync.Once     // closes quit

	mu       sync.Mutex
	state    zk.State
	changed  chan struct{} // closed and replaced on every state change
	expiries int           // sessions of ours the server refused as expired
	dialErr  error         // the last failed dial, for error messages
	fatal    error         // a failure no retry can mend: stop trying
	tlsFails int           // consecutive certificate failures
	up       bool          // connected with a session since the last report
	reported int64         // the session id last reported as connected
	closing  bool          // Close was called: the disconnect is ours
}

// Connect establishes a session, trying opts.Attempts times for at most
// opts.ConnectTimeout each. It returns an error wrapping ErrUnreachable when
// no attempt got a session, and ctx's error when ctx ends first.
func Connect(ctx context.Context, opts Options) (*Session, error) {
	var err error
	for attempt := 1; attempt <= max(opts.Attempts, 1); attempt++ {
		s := &Session{opts: opts, log: opts.Logger, obs: opts.Observer, changed: make(chan struct{}), quit: make(chan struct{})}
		s.live.requested, s.live.grace, s.live.log = opts.SessionTimeout, opts.StopGrace, opts.Logger
		if s.obs == nil {
			s.obs = nopObserver{}
		}
		s.acl = zk.WorldACL(zk.PermAll)
		if opts.User != "" {
			// "auth": whoever created the node with these credentials.
			s.acl = zk.AuthACL(zk.PermAll)
			if opts.WorldRead {
				s.acl = append(s.acl, zk.WorldACL(zk.PermRead)...)
			}
		}
		if err = s.connect(ctx); err == nil {
			return s, nil
		}
		if ctx.Err() != nil || attempt >= opts.Attempts {
			return nil, err
		}
		opts.Logger.Warn("zookeeper not reachable, trying again", "attempt", attempt, "attempts", opts.Attempts, "err", err)
	}
	return nil, err
}

func (s *Session) connect(ctx context.Context) error {
	s.obs.Connecting(s.opts.Servers, s.opts.SessionTimeout)
	hosts := hostList{zk.NewDNSHostProvider(), &s.live}
	conn, _, err := zk.Connect(s.opts.Servers, s.opts.SessionTimeout,
		zk.WithEventCallback(s.onEvent),
		zk.WithLogger(zkLogger{s.log}),
		zk.WithDialer(s.dial),
		zk.WithHostProvider(hosts))
	if err != nil {
		// go-zookeeper resolves every host once, here, and fails on the first
		// that does not resolve.
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	s.conn = conn
	s.live.mu.Lock()
	s.live.servers = hosts.Len()
	s.live.mu.Unlock()
	waitCtx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	err = s.WaitConnected(waitCtx)
	if err == nil && s.opts.User != "" {
		// go-zookeeper sends it again on every reconnect by itself.
		err = conn.AddAuth("digest", []byte(s.opts.User+":"+s.opts.Password))
		if err != nil {
			err = fmt.Errorf("%w: digest auth as %q: %v", ErrUnreachable, s.opts.User, err)
		}
	}
	if err != nil {
		s.stop.Do(func() { close(s.quit) })
		conn.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fatal != nil {
			return fmt.Errorf("%w: %v", ErrUnreachable, s.fatal)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if s.dialErr != nil {
			return fmt.Errorf("%w within %s: %v", ErrUnreachable, s.opts.ConnectTimeout, s.dialErr)
		}
		return fmt.Errorf("%w: no session within %s", ErrUnreachable, s.opts.ConnectTimeout)
	}
	s.mu.Lock()
	s.up, s.reported = true, conn.SessionID()
	s.mu.Unlock()
	s.obs.Connected(conn.Server(), conn.SessionID(), s.Granted())
	go s.heartbeat()
	go s.probe()
	return nil
}

// probe learns the largest minSessionTimeout of the listed servers, which
// bounds how long a follower may keep a touch to itself (wire.go, m). It
// asks every server, and those that did not answer again every session
// timeout; until all have answered, the margin stays at a quarter of the
// granted timeout.
func (s *Session) probe() {
	known := map[string]time.Duration{}
	servers := zk.FormatServers(s.opts.Servers)
	slices.Sort(servers)
	servers = slices.Compact(servers)
	for {
		for _, addr := range servers {
			if _, ok := known[addr]; ok {
				continue
			}
			c, raw, err := s.dialTransport("tcp", addr, s.opts.ConnectTimeout)
			if err == nil {
				var d time.Duration
				d, err = minSession(c, time.Now().Add(s.opts.ConnectTimeout))
				raw.Close()
				if err == nil {
					known[addr] = d
				}
			}
			if err != nil {
				s.log.Debug("could not learn the shortest session a server grants", "server", addr, "err", err)
			}
		}
		if len(known) == len(servers) {
			var most time.Duration
			for _, d := range known {
				most = max(most, d)
			}
			s.live.mu.Lock()
			s.live.minSession = most
			s.live.mu.Unlock()
			s.log.Debug("shortest session the servers grant", "min_session_timeout", most)
			return
		}
		select {
		case <-time.After(s.Granted()):
		case <-s.quit:
			return
		}
	}
}

// heartbeat sends a sync every granted/40 while the session is connected,
// for the session's whole life: a holder's next write (lease.go) counts as
// evidence from the last request answered m before the last sync (wire.go,
// E2), also for a lease taken after a long wait. A sync answered late is
// followed by the next one at once.
//
// The load: 40 syncs per session timeout (4 a second with the default
// 10s), each one request to the server and a round trip from it to the
// leader, which answers without writing anything; a holder adds a write
// every granted/20. The evidence then lags real time by m, a sync period
// and a write period at most: with ZooKeeper's defaults (tickTime 2s, so
// a 4s minSessionTimeout) and a 10s session, 1s + 0.25s + 0.5s.
func (s *Session) heartbeat() {
	for {
		state, _, changed := s.current()
		if state != zk.StateHasSession {
			select {
			case <-changed:
				continue
			case <-s.quit:
				return
			}
		}
		began := time.Now()
		_, _ = s.conn.Sync("/") // what the answer proves, the wire layer sees
		select {
		case <-time.After(max(s.Granted()/40-time.Since(began), time.Millisecond)):
		case <-s.quit:
			return
		}
	}
}

// SureUntil is the instant until which the server cannot have expired the
// session, as far as the evidence shows (wire.go), less a tenth of the
// granted timeout: a Lease's KillBy. A clock reading before it, taken
// after an answer arrived, shows that the answer was given while the
// session, and any lease of it, was alive, even across a pause of the
// process that no goroutine saw yet.
func (s *Session) SureUntil() time.Time {
	_, evidence := s.live.snapshot()
	granted := s.Granted()
	return evidence.Add(granted - granted/10)
}

// Granted is the session timeout the server granted, which may differ from
// the one asked for (the server clamps it to its own bounds).
func (s *Session) Granted() time.Duration {
	granted, _ := s.live.snapshot()
	if granted == 0 {
		// Not seen on the wire (it always is from a real server): trust
		// the request rather than count from zero.
		return s.opts.SessionTimeout
	}
	return granted
}

func (s *Session) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c, raw, err := s.dialTransport(network, addr, timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	var cert *tls.CertificateVerificationError
	switch {
	case errors.As(err, &cert):
		// A certificate that does not verify will not verify on the next
		// attempt either; once every server has failed so, give up.
		s.tlsFails++
		if s.tlsFails >= len(s.opts.Servers) {
			s.fatal = fmt.Errorf("tls to %s: %w", addr, err)
			close(s.changed)
			s.changed = make(chan struct{})
		}
		fallthrough
	case err != nil:
		s.dialErr = err
		return nil, err
	}
	s.tlsFails = 0
	return newWireConn(c, raw, &s.live), nil
}

// dialTransport connects to one server, in TLS if configured, and returns
// the connection and the TCP connection under it. The TLS handshake
// happens here, so that its failure is a dial error with a reason, not a
// silent session that never comes.
func (s *Session) dialTransport(network, addr string, timeout time.Duration) (c, raw net.Conn, err error) {
	// As tls.DialWithDialer does: one timeout for the dial and handshake.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, err = (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil || s.opts.TLS == nil {
		return raw, raw, err
	}
	cfg := s.opts.TLS.Clone()
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, nil, err
	}
	return tc, raw, nil
}

// hostList is go-zookeeper's own host provider (which resolves every name
// once and shuffles the addresses), except that a server the wire layer
// gave up on for want of an answer is passed over while another remains:
// a frozen server still accepts connections (the kernel does), and would
// cost a whole patience at every pass. Passing over keeps the retry flag
// of the addresses skipped, so go-zookeeper still pauses once per pass.
type hostList struct {
	*zk.DNSHostProvider
	live *liveness
}

func (h hostList) Next() (server string, retryStart bool) {
	for range h.Len() {
		s, retry := h.DNSHostProvider.Next()
		retryStart = retryStart || retry
		if !h.live.passedOver(s) {
			return s, retryStart
		}
	}
	s, retry := h.DNSHostProvider.Next() // all passed over: in turn, then
	return s, retryStart || retry
}

// onEvent runs on go-zookeeper's goroutine and must not block. Reading
// state here instead of from the library's 6-slot event channel means no
// transition is ever dropped.
func (s *Session) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	s.mu.Lock()
	s.state = ev.State
	if ev.State == zk.StateExpired {
		// Sticky: the states that follow (a new session) must not hide it.
		s.expiries++
	}
	close(s.changed)
	s.changed = make(chan struct{})
	// Report going down once and coming back once; the first session is
	// reported by connect, and the disconnect Close causes not at all.
	var report func()
	switch {
	case s.closing:
	case ev.State == zk.StateExpired:
		report = s.obs.Expired
	case ev.State == zk.StateHasSession && !s.up && s.reported != 0:
		s.up = true
		if id := s.conn.SessionID(); id != s.reported {
			// After an expiry go-zookeeper makes a new session.
			s.reported = id
			report = func() { s.obs.Connected(ev.Server, id, s.Granted()) }
		} else {
			report = func() { s.obs.Reconnected(ev.Server) }
		}
	case ev.State != zk.StateHasSession && ev.State != zk.StateConnected && s.up:
		s.up = false
		report = s.obs.Disconnected
	}
	s.mu.Unlock()
	s.log.Debug("zookeeper session event", "state", ev.State.String(), "server", ev.Server)
	if report != nil {
		report()
	}
}

// current is the session's state, how many expiries it has seen, and a
// channel that closes at the next change.
func (s *Session) current() (state zk.State, expiries int, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.expiries, s.changed
}

// WaitConnected returns when the session is usable, or with ctx's error.
func (s *Session) WaitConnected(ctx context.Context) error {
	for {
		s.mu.Lock()
		state, changed, fatal := s.state, s.changed, s.fatal
		s.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if state == zk.StateHasSession {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ID is the current session id; it changes when the session expired and
// go-zookeeper made a new one.
func (s *Session) ID() int64 { return s.conn.SessionID() }

// Close ends the session; the server deletes its ephemeral nodes at once.
func (s *Session) Close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.stop.Do(func() { close(s.quit) })
	s.conn.Close()
}

// abs maps a path as lockex sees it to the path on the server.
func (s *Session) abs(p string) string { return s.opts.Chroot + p }

// rel maps a server path back inside the chroot.
func (s *Session) rel(p string) string { return p[len(s.opts.Chroot):] }

// zkLogger sends go-zookeeper's own lines through lockex's logger, at debug:
// lockex logs every state change that matters itself.
type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "zk")
}
