package app

import (
	"crypto/sha256"
	"encoding/hex"
	"net"

	"github.com/lockex/lockex/internal/identity"
)

// identityClaim keeps the claim for the process's life: the kernel
// releases it only when the process is gone.
var identityClaim *net.UnixConn

// claimIdentity binds an abstract UNIX socket named after self's
// container in lockex's network namespace, which the containers of a pod
// share and keep across container restarts. A name is bound by one socket
// at a time and freed as its process dies, so a lockex that binds it knows
// that no other lockex with this identity lives in the namespace: not its
// earlier incarnation, and not a twin that is PID 1 of a PID namespace of
// its own beside it (unshare --pid in the container, or on the host with
// the same variables), which PID 1 alone cannot rule out.
func claimIdentity(self identity.Identity) error {
	if identityClaim != nil {
		// Claimed by this lockex for an earlier session (a round of
		// --requeue, a standby's session after it left the queue): the
		// identity is still its own, and so are the nodes it writes.
		return nil
	}
	key := identity.Identity{Host: self.Host, PID: 1, Version: "-", Namespace: self.Namespace, Pod: self.Pod, UID: self.UID, Container: self.Container}
	sum := sha256.Sum256([]byte(key.String()))
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "@lockex-identity/" + hex.EncodeToString(sum[:]), Net: "unixgram"})
	if err != nil {
		return err
	}
	identityClaim = c
	return nil
}
