// Package podlabel keeps a label on lockex's own Kubernetes pod while lockex
// is active (docs/design.md §8, --active-label), so that a Service selecting
// the label reaches only the active pods while every connected pod stays
// Ready. It talks to the API server with the pod's service account, with a
// JSON merge patch of the pod's labels, and never blocks the run: the label
// follows the state from its own goroutine, and a failure is retried.
package podlabel

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultServiceAccountDir is where Kubernetes mounts a pod's service
// account token, CA and namespace.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Config is where the label goes and how to reach the API server.
type Config struct {
	Key, Value string
	Pod        string // the pod's name
	Namespace  string
	Server     string // https://host:port
	TokenFile  string // re-read for every request: bound tokens rotate
	CA         *x509.CertPool
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

// Labeler keeps the label in step with Set.
type Labeler struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	want   chan bool // the latest wish; older ones are dropped
	done   chan struct{}
	// known is what the pod carries as far as Run knows: nil before the
	// first answer and after any patch that failed or was cancelled,
	// since the API server may have applied one whose answer was lost.
	// Run alone touches it until done closes.
	known *bool
	// recheckAfter is how long after a streak of failures ends Run sends
	// its wish once more.
	recheckAfter time.Duration
}

// requestTimeout bounds one call to the API server.
const requestTimeout = 5 * time.Second

// New returns a Labeler for cfg. Call Run to start it.
func New(cfg Config, log *slog.Logger) *Labeler {
	transport := &http.Transport{
		Proxy:           http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{RootCAs: cfg.CA, MinVersion: tls.VersionTLS12},
	}
	return &Labeler{
		cfg: cfg, log: log,
		client: &http.Client{Transport: transport, Timeout: requestTimeout},
		want:   make(chan bool, 1),
		done:   make(chan struct{}),

		recheckAfter: lateApplyWindow,
	}
}

// Set says whether the pod should carry the label. It never blocks: the
// status recorder calls it while it holds its lock.
func (l *Labeler) Set(active bool) {
	for {
		select {
		case l.want <- active:
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

// Run applies the wishes until ctx ends. It first removes the label, which
// a previous run in the same pod may have left, then follows Set.
//
// A failed patch leaves the label unknown: the API server may have applied
// it and lost the answer. So the next wish is always sent, whatever was
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
// undo a label changed by hand, and costs a patch per pod per period
// whether anything went wrong or not.
func (l *Labeler) Run(ctx context.Context) {
	defer close(l.done)
	want, pending := false, true
	backingOff, failing := false, false
	delay := retryMin
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	recheck := time.NewTimer(time.Hour)
	recheck.Stop()
	defer recheck.Stop()
	for {
		if pending && !backingOff {
			err := l.patch(ctx, want)
			switch {
			case err == nil:
				pending, delay = false, retryMin
				carried := want
				l.known = &carried
				if failing {
					l.log.Info("pod label set", "pod", l.cfg.Pod, "label", l.cfg.Key, "active", want)
					recheck.Reset(l.recheckAfter)
				}
				failing = false
			case ctx.Err() != nil:
				l.known = nil
				return
			default:
				l.known = nil
				if !failing {
					// Once per streak of failures: the retries follow.
					l.log.Error("cannot set the pod label; retrying", "pod", l.cfg.Pod, "label", l.cfg.Key, "active", want, "err", err)
				}
				failing, backingOff = true, true
				retry.Reset(delay)
				delay = min(2*delay, retryMax)
			}
		}
		select {
		case <-ctx.Done():
			return
		case want = <-l.want:
			pending = l.known == nil || *l.known != want
		case <-retry.C:
			backingOff = false
		case <-recheck.C:
			pending = true
		}
	}
}

// Clear removes the label unless Run knows the pod does not carry it,
// waiting at most d, once Run has ended (its ctx is done): the last word
// as lockex exits.
func (l *Labeler) Clear(d time.Duration) {
	<-l.done
	if l.known != nil && !*l.known {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := l.patch(ctx, false); err != nil {
		l.log.Warn("pod label not removed at exit; the pod is not Ready without lockex anyway", "pod", l.cfg.Pod, "label", l.cfg.Key, "err", err)
	}
}

// patch sets (active) or removes the label with a JSON merge patch.
func (l *Labeler) patch(ctx context.Context, active bool) error {
	var value any // null removes the key
	if active {
		value = l.cfg.Value
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{l.cfg.Key: value}}})
	if err != nil {
		return err
	}
	token, err := os.ReadFile(l.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("service account token: %w", err)
	}
	u := fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s", l.cfg.Server, url.PathEscape(l.cfg.Namespace), url.PathEscape(l.cfg.Pod))
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PATCH pods/%s in %s: %s: %s", l.cfg.Pod, l.cfg.Namespace, resp.Status, apiMessage(msg))
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
