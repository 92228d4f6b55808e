package podlabel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lockex/lockex/internal/identity"
)

// A holder that dies without a word (SIGKILL, OOM, a node that vanishes)
// leaves its pod labelled and at the holder's cost: its own lockex never
// runs again to say otherwise, unless its container restarts in the same
// pod. The holder that takes over knows whose pod that was: a mutex waiter
// reads the data of the node it waits behind (zklock.Options.Behind), the
// identity with the pod's name. Once it holds, no other pod rightly carries
// the label or the cost, so it clears them on those pods, with a
// resourceVersion precondition: a pod written since the read (relabelled
// by a lockex that holds since) answers 409 and is read again, and nothing
// is written once this lockex no longer holds.

// maxBehind bounds the pods remembered between two holds: a waiter watches
// one node at a time, and a new one only when the one before left.
const maxBehind = 8

// correctTries bounds the reads and patches spent on one pod.
const correctTries = 3

// Behind is told the data of each node this lockex waits directly behind
// (zklock.Options.Behind). It never blocks. Data that is no lockex
// identity naming a pod in this lockex's namespace is ignored.
func (l *Labeler) Behind(data []byte) {
	id, ok := identity.Parse(string(data))
	if !ok || id.Pod == "" || id.Namespace != l.cfg.Namespace || id.Pod == l.cfg.Pod {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.behind {
		if b.Pod == id.Pod && b.UID == id.UID {
			return
		}
	}
	if len(l.behind) == maxBehind {
		l.behind = l.behind[1:]
	}
	l.behind = append(l.behind, id)
}

// Session is told each new ZooKeeper session's SureUntil
// (zklock.Session.SureUntil): a pod's read counts as made while this
// lockex held only if it was answered before that instant, however long
// the process was paused meanwhile.
func (l *Labeler) Session(sureUntil func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sureUntil = sureUntil
}

// holdChanged is told whether the lock is held, at every change of the
// status: when the lock is newly held, the pods of the holders it waited
// behind are corrected, from a goroutine of their own.
func (l *Labeler) holdChanged(held bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	was := l.held
	l.held = held
	if !held || was || len(l.behind) == 0 {
		return
	}
	pods := l.behind
	l.behind = nil
	go l.correct(pods)
}

// Releasing is told that this lockex begins to release the lock: from
// then on the next holder may hold and label its pod before the status
// says released, so no read made after this counts as made while holding,
// until the lock is held again.
func (l *Labeler) Releasing() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = false
}

// surelyHolding reports whether the lock is held as far as the status
// says, and the session surely alive now: a read answered before this
// call was answered while this lockex held the lock, even if the process
// was paused past the session's expiry and the status does not know yet.
func (l *Labeler) surelyHolding() (held, sure bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, l.held && l.sureUntil != nil && time.Now().Before(l.sureUntil())
}

// correct clears what pods may carry as stale holders.
func (l *Labeler) correct(pods []identity.Identity) {
	for _, id := range pods {
		l.correctOne(id)
	}
}

func (l *Labeler) correctOne(id identity.Identity) {
	attrs := []any{"pod", id.Pod, "namespace", id.Namespace}
	var err error
	for try := range correctTries {
		if try > 0 {
			time.Sleep(time.Duration(try) * retryMin)
		}
		var done bool
		done, err = l.correctOnce(id, attrs)
		if done {
			return
		}
		if err != nil {
			l.failed()
		}
	}
	if err != nil {
		l.log.Warn("cannot clear the label and cost the previous holder's pod may have kept", append(attrs, "err", err)...)
	}
}

// errChanged is a 409: the pod was written since it was read.
var errChanged = errors.New("the pod changed since it was read")

// correctOnce reads the pod and, if it still is the one that held and
// carries the label or the holder's cost while this lockex holds, clears
// them on condition that it was not written since. It reports whether
// nothing is left to do; err is a failure to count (a 409 is none).
func (l *Labeler) correctOnce(id identity.Identity, attrs []any) (done bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var pod struct {
		Metadata struct {
			UID             string            `json:"uid"`
			ResourceVersion string            `json:"resourceVersion"`
			Labels          map[string]string `json:"labels"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	code, body, err := l.call(ctx, http.MethodGet, id.Namespace, id.Pod, nil)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusNotFound:
		return true, nil // the pod is gone: nothing routes to it
	case code != http.StatusOK:
		return false, fmt.Errorf("GET pods/%s in %s: %d: %s", id.Pod, id.Namespace, code, apiMessage(body))
	}
	if err := json.Unmarshal(body, &pod); err != nil {
		return false, fmt.Errorf("GET pods/%s in %s: %w", id.Pod, id.Namespace, err)
	}
	meta := pod.Metadata
	_, labelled := meta.Labels[l.cfg.Key]
	labelled = labelled && l.cfg.Key != ""
	costly := l.cfg.DeletionCost && meta.Annotations[DeletionCostAnnotation] == HolderCost
	if (id.UID != "" && meta.UID != id.UID) || (!labelled && !costly) {
		return true, nil // another pod of that name, or nothing stale
	}
	// Read while this lockex held, so no other pod rightly carried either:
	// the label and cost were stale then. Should the hold have ended
	// before the answer came, the pod may hold since. Answered too late to
	// be sure of the session (a pause, a slow answer): read again.
	held, sure := l.surelyHolding()
	if !held {
		return true, nil
	}
	if !sure {
		l.log.Debug("the previous holder's pod was read too late to be sure the lock was held then", attrs...)
		return false, nil
	}
	if l.beforeCorrect != nil {
		l.beforeCorrect()
	}
	patch := map[string]any{"resourceVersion": meta.ResourceVersion}
	if l.cfg.Key != "" {
		patch["labels"] = map[string]any{l.cfg.Key: nil}
	}
	annotations := map[string]any{HoldAnnotation: nil}
	if l.cfg.DeletionCost {
		annotations[DeletionCostAnnotation] = StandbyCost
	}
	patch["annotations"] = annotations
	b, err := json.Marshal(map[string]any{"metadata": patch})
	if err != nil {
		return false, err
	}
	code, body, err = l.call(ctx, http.MethodPatch, id.Namespace, id.Pod, b)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusConflict:
		// Written since: read again, and judge again.
		l.log.Debug("the previous holder's pod changed since it was read", attrs...)
		return false, nil
	case code == http.StatusNotFound:
		return true, nil
	case code != http.StatusOK:
		return false, fmt.Errorf("PATCH pods/%s in %s: %d: %s", id.Pod, id.Namespace, code, apiMessage(body))
	}
	l.log.Info("cleared the label and cost the previous holder's pod kept", append(attrs, "label", labelled, "holder_cost", costly)...)
	return true, nil
}

// call sends one request about pod ns/name with the service account's
// token, re-read each time, and returns the status and the start of the
// body. A body is sent as a JSON merge patch.
func (l *Labeler) call(ctx context.Context, method, ns, name string, body []byte) (int, []byte, error) {
	token, err := os.ReadFile(l.cfg.TokenFile)
	if err != nil {
		return 0, nil, fmt.Errorf("service account token: %w", err)
	}
	u := fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s", l.cfg.Server, url.PathEscape(ns), url.PathEscape(name))
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	// A pod's JSON is a few KiB; its metadata comes first.
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, msg, err
}

// corrector's state lives on the Labeler, guarded by mu.
type corrector struct {
	mu     sync.Mutex
	held   bool                // the lock is held, as the status last said
	behind []identity.Identity // pods of nodes waited behind since the last hold
	// sureUntil is the session's SureUntil; nil before the first session.
	sureUntil func() time.Time
	// beforeCorrect, in tests, runs between the read and the patch.
	beforeCorrect func()
}
