// Package zktest starts real Apache ZooKeeper servers (Debian's zookeeper
// package) for tests: standalone or as an ensemble, each a JVM listening on
// free loopback ports with its files in the test's temporary directory.
// Every JVM is killed when the test that started it ends.
package zktest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	javaPath = "/usr/bin/java"
	zkJar    = "/usr/share/java/zookeeper.jar"
	// slf4j-simple comes with libslf4j-java, which ZooKeeper's package
	// depends on. Without a binding the server logs nothing, so a failed
	// start (a port taken, say) would leave no trace in server.log; at
	// level warn the log stays short.
	slf4jSimple = "/usr/share/java/slf4j-simple.jar"
	// Debian's zookeeper.jar lists netty-handler and netty-transport in its
	// manifest's Class-Path but not netty-codec, which the Netty connection
	// factory (the TLS option) needs for every connection: without it each
	// one fails with a NoClassDefFoundError and the server never answers.
	// It comes with libnetty-java, which ZooKeeper's package depends on.
	nettyCodec = "/usr/share/java/netty-codec.jar"
	mainClass  = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

	startTimeout = 30 * time.Second
	pollInterval = 50 * time.Millisecond
	stopGrace    = 5 * time.Second
	// fourLetterTimeout bounds a whole four-letter exchange. A paused
	// server still accepts connections (the kernel does that), but never
	// answers.
	fourLetterTimeout = 2 * time.Second
	// pollTimeout bounds one readiness probe. ZooKeeper 3.8 answers a srvr
	// that comes in early during start-up but then fails to close the
	// connection (a NullPointerException in its log), so a probe must not
	// wait for the close for long.
	pollTimeout = 500 * time.Millisecond
)

// Server is one ZooKeeper server process. Its directory (zoo.cfg, myid,
// data/ and server.log) and its ports stay the same across restarts.
type Server struct {
	id         int
	dir        string
	java       string
	host       string // the loopback address it binds its ports on
	gid        uint32 // the JVM's group id, 0 for lockex's own (see Partitions)
	clientPort int
	securePort int    // 0 without TLS
	tls        *Certs // nil without TLS
	ensemble   bool   // whether "serving" means leader/follower, not standalone

	mu   sync.Mutex
	proc *os.Process
	done chan struct{} // closed once proc has exited
}

// Addr returns the client address, "<host>:<clientPort>". A standalone
// server binds 127.0.0.1; member i of an ensemble binds its client, peer
// and election ports on 127.0.0.(10+i), so that its peer traffic can be
// told from the others' (see Cluster.Cut).
func (s *Server) Addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.clientPort)) }

// Host returns the loopback address the server binds its ports on.
func (s *Server) Host() string { return s.host }

// ID returns the server's myid, 1-based in ensemble order; 1 for standalone.
func (s *Server) ID() int { return s.id }

// Running reports whether the JVM has been started and has not exited yet
// (a paused JVM is running).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runningLocked()
}

func (s *Server) runningLocked() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Start (re)starts a stopped or killed server with the same directory,
// ports and data. It returns once the server serves clients: for an
// ensemble member that is when it reports leader or follower, so a quorum
// must be up. It fails after 30s, leaving the JVM running.
func (s *Server) Start() error {
	if err := s.launch(); err != nil {
		return err
	}
	return waitStarted([]*Server{s}, time.Now().Add(startTimeout))
}

// Stop sends SIGTERM and returns once the JVM has exited, sending SIGKILL
// if it is still there after 5s. A paused server is resumed so that it can
// handle the signal.
func (s *Server) Stop() error { return s.signalAndWait(syscall.SIGTERM) }

// Kill sends SIGKILL, like a crash, and returns once the JVM has exited.
func (s *Server) Kill() error { return s.signalAndWait(syscall.SIGKILL) }

// Pause freezes the JVM with SIGSTOP: its connections stay open, but it
// answers nothing, like a hung server or a long GC pause. Sessions on it
// expire from the other members' point of view.
// It returns once every thread of the JVM has stopped: a stop takes effect
// thread by thread, and on a loaded machine a thread could still answer a
// request after the signal was sent.
func (s *Server) Pause() error {
	if err := s.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	s.mu.Lock()
	pid := s.proc.Pid
	s.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if allStopped(pid) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zktest: server %d: not every thread stopped within 5s", s.id)
		}
	}
}

// allStopped reports whether every thread of pid is stopped (state T).
func allStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		st := string(b)
		if f := strings.Fields(st[strings.LastIndexByte(st, ')')+1:]); len(f) == 0 || f[0] != "T" {
			return false
		}
	}
	return true
}

// Resume lets a paused JVM run again (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

// Mode asks the server with the four-letter word srvr and returns its mode:
// "standalone", "leader" or "follower". It returns an error if the server
// is down, paused (after 2s), or up but not serving (no quorum yet).
func (s *Server) Mode() (string, error) { return s.mode(fourLetterTimeout) }

func (s *Server) mode(timeout time.Duration) (string, error) {
	out, err := fourLetter(s.Addr(), "srvr", timeout)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if mode, ok := strings.CutPrefix(line, "Mode: "); ok {
			return strings.TrimSpace(mode), nil
		}
	}
	return "", fmt.Errorf("zktest: server %d is not serving: %s", s.id, strings.TrimSpace(out))
}

// FourLetter sends one of ZooKeeper's four-letter commands (such as "srvr",
// "ruok", "mntr" or "cons") to addr and returns the whole reply; the server
// closes the connection once it has answered. It gives up after 2s.
func FourLetter(addr, cmd string) (string, error) {
	return fourLetter(addr, cmd, fourLetterTimeout)
}

func fourLetter(addr, cmd string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(conn, cmd); err != nil {
		return "", err
	}
	out, err := io.ReadAll(conn)
	return string(out), err
}

// serves reports whether mode means the server serves clients.
func (s *Server) serves(mode string) bool {
	if s.ensemble {
		return mode == "leader" || mode == "follower"
	}
	return mode == "standalone"
}

// launch starts the JVM without waiting for it to serve. Its output is
// appended to server.log, so the log of every run survives a restart.
func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runningLocked() {
		return fmt.Errorf("zktest: server %d is already running", s.id)
	}
	logFile, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the JVM has its own copy once started
	cmd := exec.Command(s.java,
		// A small heap, the serial collector and C1-only compilation cut
		// the start-up time and footprint of a short-lived test server.
		"-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-cp", zkJar+":"+slf4jSimple+":"+nettyCodec+":"+s.dir,
		mainClass, filepath.Join(s.dir, "zoo.cfg"))
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = withGroup(sysProcAttr(), s.gid)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("zktest: starting server %d: %w", s.id, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait() // the exit status is of no interest: we signal it ourselves
		close(done)
	}()
	s.proc, s.done = cmd.Process, done
	return nil
}

func (s *Server) signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return fmt.Errorf("zktest: server %d is not running", s.id)
	}
	return s.proc.Signal(sig)
}

func (s *Server) signalAndWait(sig syscall.Signal) error {
	s.mu.Lock()
	proc, done, running := s.proc, s.done, s.runningLocked()
	s.mu.Unlock()
	if !running {
		return fmt.Errorf("zktest: server %d is not running", s.id)
	}
	// The JVM may exit on its own meanwhile; then there is nothing to do.
	if err := proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	if sig == syscall.SIGKILL {
		<-done
		return nil
	}
	proc.Signal(syscall.SIGCONT) // a stopped process handles SIGTERM only once continued
	select {
	case <-done:
	case <-time.After(stopGrace):
		proc.Kill()
		<-done
	}
	return nil
}

// kill is Kill for cleanup: a server that is not running is fine.
func (s *Server) kill() {
	if s.Running() {
		s.Kill()
	}
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "server.log") }

// logTail returns the end of server.log, to explain a failed start.
func (s *Server) logTail() string {
	const max = 2000
	b, _ := os.ReadFile(s.logPath())
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return fmt.Sprintf("\n--- end of %s ---\n%s", s.logPath(), b)
}

// bindFailed reports whether the server failed to bind one of its ports,
// which another process may have taken after freePorts released it.
func (s *Server) bindFailed() bool {
	b, _ := os.ReadFile(s.logPath())
	return strings.Contains(string(b), "Address already in use") ||
		strings.Contains(string(b), "BindException")
}
