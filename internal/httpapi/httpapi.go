// Package httpapi serves lockex's probes, metrics and /status (docs/design.md
// §8) from a status snapshot, a registry and a read of the lock; it decides
// nothing itself.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lockex/lockex/internal/status"
)

// Server is the HTTP server behind --http-addr.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}

	mu      sync.Mutex
	scraped chan struct{} // closed and replaced after each /metrics answer
}

// Start listens on addr at once, so that a bad or taken address is an error
// before the lock is sought, and serves in the background. readLock, if
// not nil, gives /status the lock as ZooKeeper has it.
func Start(addr string, snapshot func() status.Snapshot, readLock ReadLock, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:      ln,
		done:    make(chan struct{}),
		scraped: make(chan struct{}),
	}
	mux.Handle("GET /healthz", probe(snapshot, func(s status.Snapshot) bool { return !s.SessionGone() }))
	mux.Handle("GET /readyz", probe(snapshot, func(s status.Snapshot) bool { return s.Connected }))
	mux.Handle("GET /active", probe(snapshot, status.Snapshot.Active))
	var view *lockView
	if readLock != nil {
		view = &lockView{read: readLock}
	}
	mux.Handle("GET /status", statusPage(snapshot, view))
	mux.Handle("GET /metrics", s.counted(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("serving probes and metrics", "addr", ln.Addr().String())
	return s, nil
}

// counted serves /metrics and then tells Scraped's waiters.
func (s *Server) counted(metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		metrics.ServeHTTP(w, r)
		s.mu.Lock()
		close(s.scraped)
		s.scraped = make(chan struct{})
		s.mu.Unlock()
	})
}

// Scraped closes when /metrics has next been answered.
func (s *Server) Scraped() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scraped
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, letting requests in flight finish for a moment.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}

// probe answers 200 when ok holds for the state, else 503, with the state
// in words either way.
func probe(snapshot func() status.Snapshot, ok func(status.Snapshot) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := snapshot()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ok(s) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, s.Describe())
	})
}
