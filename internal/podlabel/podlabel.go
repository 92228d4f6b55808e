// Package podlabel keeps lockex's own Kubernetes pod telling what lockex is
// (docs/design.md §8): a label while lockex is active (--active-label), so
// that a Service selecting the label reaches only the active pods while
// every connected pod stays Ready, and a pod-deletion-cost annotation that is
// high while lockex holds the lock and low while it does not
// (--deletion-cost), so that a ReplicaSet scaling down removes standbys
// before the holder. It talks to the API server with the pod's service
// account, with one JSON merge patch of the pod's metadata for both, and
// never blocks the run: the pod follows the state from its own goroutine,
// and a failure is retried. Once it holds, it also clears what a holder it
// took over from, dead without a word, left on that one's pod (correct.go).
package podlabel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultServiceAccountDir is where Kubernetes mounts a pod's service
// account token, CA and namespace.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// DeletionCostAnnotation is what a ReplicaSet reads when it chooses which of
// its pods to delete: among pods alike in phase and readiness, the lowest
// cost goes first.
const DeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// The costs --deletion-cost gives a holder's pod and a standby's. A pod
// without the annotation counts as 0, between the two: such a pod may run
// a holder whose patch has not landed yet, so it goes after a known
// standby. Far from 0 both ways, and far from the int32 bounds, so that an
// operator can still rank other pods around them.
const (
	HolderCost  = "1000000"
	StandbyCost = "-1000000"
)

// Config is what the pod should carry and how to reach the API server.
type Config struct {
	// Key and Value are the label (--active-label); Key is "" for none.
	Key, Value string
	// DeletionCost keeps DeletionCostAnnotation at HolderCost or
	// StandbyCost.
	DeletionCost bool
	Pod          string // the pod's name
	Namespace    string
	Server       string // https://host:port
	TokenFile    string // re-read for every request: bound tokens rotate
	CA           *x509.CertPool
}

// InCluster fills Server, Namespace, TokenFile and CA from the pod's
// environment (KUBERNETES_SERVICE_HOST and _PORT) and the service account
// directory, as client-go's in-cluster configuration does.
func InCluster(getenv func(string) string, dir string) (Config, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return Config{}, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a Kubernetes pod")
	}
	ns, err := os.ReadFile(filepath.Join(dir, "namespace"))
	if err != nil {
		return Config{}, fmt.Errorf("the pod's namespace: %w (is a service account token mounted?)", err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return Config{}, fmt.Errorf("the API server's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return Config{}, fmt.Errorf("%s: no PEM certificate in it", filepath.Join(dir, "ca.crt"))
	}
	token := filepath.Join(dir, "token")
	if _, err := os.Stat(token); err != nil {
		return Config{}, fmt.Errorf("the service account token: %w", err)
	}
	return Config{
		Namespace: strings.TrimSpace(string(ns)),
		Server:    "https://" + net.JoinHostPort(host, port),
		TokenFile: token,
		CA:        pool,
	}, nil
}

// HoldAnnotation names the hold lockex's pod tells of (Wish.Hold).
const HoldAnnotation = "lockex.io/hold"

// Wish is what lockex is, as its pod should tell it.
type Wish struct {
	Active bool // /active answers 200: the label
	Held   bool // the lock or a lease is held: the deletion cost
	// Hold names the hold (its fencing token), "" while none is held:
	// HoldAnnotation. Each new hold is a write of the pod, even one whose
	// label and cost the pod still carries from an earlier hold, which the
	// API server would otherwise not write at all. So a holder it took
	// over from that holds again has changed its pod's resourceVersion,
	// and a correction read before then is refused (correct.go).
	Hold string
}

// Labeler keeps the pod's label and deletion cost in step with Set.
type Labeler struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	failed func()    // called for every patch that fails
	want   chan Wish // the latest wish; older ones are dropped
	drain  chan chan struct{}
	done   chan struct{}
	// known is what the pod carries as far as Run knows: nil before the
	// first answer and after any patch that failed or was cancelled,
	// since the API server may have applied one whose answer was lost.
	// Run alone touches it until done closes.
	known *Wish
	// recheckAfter is how long after a streak of failures ends Run sends
	// its wish once more.
	recheckAfter time.Duration
	// corrector clears what a holder that died without a word left on its
	// pod (correct.go).
	corrector
}

// requestTimeout bounds one call to the API server.
const requestTimeout = 5 * time.Second

// New returns a Labeler for cfg. Call Run to start it. failed, if not nil,
// is called for each patch the API server refused or that did not reach
// it (for a metric).
func New(cfg Config, log *slog.Logger, failed func()) *Labeler {
	if failed == nil {
		failed = func() {}
	}
	transport := &http.Transport{
		Proxy:           http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{RootCAs: cfg.CA, MinVersion: tls.VersionTLS12},
	}
	return &Labeler{
		cfg: cfg, log: log,
		client: &http.Client{Transport: transport, Timeout: requestTimeout},
		failed: failed,
		want:   make(chan Wish, 1),
		drain:  make(chan chan struct{}, 1),
		done:   make(chan struct{}),

		recheckAfter: lateApplyWindow,
	}
}

// Set says what the pod should carry. It never blocks: the status recorder
// calls it while it holds its lock.
func (l *Labeler) Set(w Wish) {
	l.holdChanged(w.Held)
	w = l.relevant(w)
	for {
		select {
		case l.want <- w:
			return
		default:
		}
		select {
		case <-l.want:
		default:
		}
	}
}

// Retry delays after a failed patch: from retryMin, doubling, to retryMax.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 10 * time.Second
)

// lateApplyWindow is how long a patch lockex gave up on may still be
// applied by the API server: its default --request-timeout is one minute,
// and a request stuck in admission or in a proxy can outlast lockex's own
// 5s. Such a patch, applied late, undoes the success that ended the
// streak; nothing else would notice, since the wish has not changed.
const lateApplyWindow = time.Minute

// Drain takes the label off the pod for good while lockex still holds and
// its workload still runs, so that traffic leaves before a stop lockex was
// asked for, and returns a channel that closes once the API server has
// answered a patch without the label. It never blocks, and the channel
// may never close (the API server does not answer, Run has ended): the
// caller bounds its wait. Without a label (--deletion-cost alone) there
// is nothing to drain, and the channel is closed.
func (l *Labeler) Drain() <-chan struct{} {
	done := make(chan struct{})
	if l.cfg.Key == "" {
		close(done)
		return done
	}
	select {
	case l.drain <- done:
	default: // a drain was asked already, and is not yet taken up
	}
	return done
}

// relevant keeps of w what this Labeler patches, so that a change of what
// it does not patch (Held without --deletion-cost) costs no call.
func (l *Labeler) relevant(w Wish) Wish {
	return Wish{Active: w.Active && l.cfg.Key != "", Held: w.Held && l.cfg.DeletionCost, Hold: w.Hold}
}

// Run applies the wishes until ctx ends. It first makes the pod tell a
// standby (no label, the low cost), which a previous run in the same pod
// may have left otherwise, then follows Set.
//
// A failed patch leaves the pod's metadata unknown: the API server may have
// applied it and lost the answer. So the next wish is always sent, whatever was
// believed before, and retried, from retryMin doubling to retryMax, until
// one succeeds. The backoff bounds every patch after a failure, not only
// the retry of the same wish: Set comes with every readiness check, and a
// flapping check against a failing API server would otherwise patch at the
// check's rate. A changed wish goes at once only while no failure is being
// backed off: then the last patch was answered, and each failure still
// buys its full delay before the next patch. Within a streak, a new wish
// waits at most retryMax, a lag design.md §8 admits for an unreachable
// API server.
//
// Once a streak ends, the wish is sent once more lateApplyWindow later, in
// case a patch given up on during the streak is applied after the one that
// succeeded. One patch per streak: a periodic re-assertion would also
// undo a label or cost changed by hand, and costs a patch per pod per period
// whether anything went wrong or not.
func (l *Labeler) Run(ctx context.Context) {
	defer close(l.done)
	var want Wish
	pending := true
	backingOff, failing := false, false
	delay := retryMin
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	recheck := time.NewTimer(time.Hour)
	recheck.Stop()
	defer recheck.Stop()
	// Once draining, the label stays off whatever the wishes say; the
	// drain's waiters hear when the API server has answered that.
	draining := false
	var drainWaiters []chan struct{}
	goal := func() Wish {
		w := want
		if draining {
			w.Active = false
		}
		return w
	}
	for {
		if pending && !backingOff {
			w := goal()
			err := l.patch(ctx, w)
			switch {
			case err == nil:
				pending, delay = false, retryMin
				l.known = &w
				if failing {
					l.log.Info("pod patched", l.attrs(w)...)
					recheck.Reset(l.recheckAfter)
				}
				failing = false
			case ctx.Err() != nil:
				l.known = nil
				return
			default:
				l.known = nil
				l.failed()
				if !failing {
					// Once per streak of failures: the retries follow.
					l.log.Error("cannot patch the pod; retrying", append(l.attrs(w), "err", err)...)
				}
				failing, backingOff = true, true
				retry.Reset(delay)
				delay = min(2*delay, retryMax)
			}
		}
		if draining && l.known != nil && !l.known.Active {
			for _, ch := range drainWaiters {
				close(ch)
			}
			drainWaiters = nil
		}
		select {
		case <-ctx.Done():
			return
		case want = <-l.want:
			pending = l.known == nil || *l.known != goal()
		case ch := <-l.drain:
			draining = true
			drainWaiters = append(drainWaiters, ch)
			pending = l.known == nil || *l.known != goal()
		case <-retry.C:
			backingOff = false
		case <-recheck.C:
			pending = true
		}
	}
}

// attrs name the pod and what a patch of w asks, for a log line.
func (l *Labeler) attrs(w Wish) []any {
	a := []any{"pod", l.cfg.Pod}
	if l.cfg.Key != "" {
		a = append(a, "label", l.cfg.Key, "active", w.Active)
	}
	if l.cfg.DeletionCost {
		a = append(a, "deletion_cost", cost(w.Held))
	}
	return a
}

func cost(held bool) string {
	if held {
		return HolderCost
	}
	return StandbyCost
}

// Clear makes the pod tell a standby (no label, the low cost) unless Run
// knows it does, waiting at most d, once Run has ended (its ctx is done):
// the last word as lockex exits.
func (l *Labeler) Clear(d time.Duration) {
	<-l.done
	if l.known != nil && *l.known == (Wish{}) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := l.patch(ctx, Wish{}); err != nil {
		l.failed()
		l.log.Warn("pod not patched at exit; the pod is not Ready without lockex anyway", append(l.attrs(Wish{}), "err", err)...)
	}
}

// patch sets or removes the label and sets the deletion cost, in one JSON
// merge patch: the two never disagree for longer than one call.
func (l *Labeler) patch(ctx context.Context, w Wish) error {
	meta := map[string]any{}
	if l.cfg.Key != "" {
		var value any // null removes the key
		if w.Active {
			value = l.cfg.Value
		}
		meta["labels"] = map[string]any{l.cfg.Key: value}
	}
	var hold any // null removes the key
	if w.Hold != "" {
		hold = w.Hold
	}
	annotations := map[string]any{HoldAnnotation: hold}
	if l.cfg.DeletionCost {
		annotations[DeletionCostAnnotation] = cost(w.Held)
	}
	meta["annotations"] = annotations
	body, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	code, msg, err := l.call(ctx, http.MethodPatch, l.cfg.Namespace, l.cfg.Pod, body)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("PATCH pods/%s in %s: %d %s: %s", l.cfg.Pod, l.cfg.Namespace, code, http.StatusText(code), apiMessage(msg))
	}
	return nil
}

// apiMessage is the message of a Kubernetes Status object, or the body.
func apiMessage(body []byte) string {
	var st struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		return st.Message
	}
	return strings.TrimSpace(string(body))
}
