// Command lockex runs a command while it holds a ZooKeeper lock, or one of
// N leases of a semaphore, and releases it the moment the command ends:
//
//	lockex [flags] -- command [args...]
//
// Run lockex --help for the flags. Each flag can also be set as LOCKEX_ and
// its long name upper-cased with - turned into _ (LOCKEX_SESSION_TIMEOUT);
// ZKHOSTS is read too. The contract (flags, exit codes, znode layout) is in
// the README.
package main

import (
	"context"
	"os"

	"github.com/lockex/lockex/internal/app"
	"github.com/lockex/lockex/internal/proc"
)

func main() {
	// lockex re-executes itself as the guardian of its workload.
	if code, ok := proc.Guardian(os.Args); ok {
		os.Exit(code)
	}
	// A crash must end lockex, not hang it on a stderr nobody drains.
	stderr := proc.SplitStderr()
	os.Exit(app.Main(context.Background(), os.Args[1:], os.Environ(), os.Stdout, stderr))
}
