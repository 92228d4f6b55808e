#!/bin/bash
# make demo: a throw-away ZooKeeper on a free loopback port, and two lockex
# instances taking turns on one lock, then a third that will not wait.
set -euo pipefail
lockex=$(realpath "${1:-bin/lockex}")
dir=$(mktemp -d /tmp/lockex-demo.XXXXXX)
zk_pid=
cleanup() {
	if [ -n "$zk_pid" ]; then kill "$zk_pid" 2>/dev/null; wait "$zk_pid" 2>/dev/null || true; fi
	rm -rf "$dir"
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=$((20000 + RANDOM % 20000))
until port_free "$port"; do port=$((20000 + RANDOM % 20000)); done

mkdir "$dir/data"
cat >"$dir/zoo.cfg" <<CFG
tickTime=500
dataDir=$dir/data
clientPort=$port
admin.enableServer=false
4lw.commands.whitelist=srvr
CFG
java -Xmx128m -XX:+UseSerialGC -cp "/usr/share/java/zookeeper.jar:$dir" \
	org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" >"$dir/zookeeper.log" 2>&1 &
zk_pid=$!
# Bounded: a server that has taken the connection but never answers would
# otherwise keep cat waiting for ever.
srvr() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && echo srvr >&3 && cat <&3' "$port" 2>/dev/null; }
for _ in $(seq 100); do srvr | grep -q '^Mode:' && break; sleep 0.1; done
srvr | grep -q '^Mode:' || { echo "ZooKeeper did not start; its log:" >&2; cat "$dir/zookeeper.log" >&2; exit 1; }
echo "== ZooKeeper serving on 127.0.0.1:$port (data in $dir, removed at exit)"
export LOCKEX_ZKHOSTS=127.0.0.1:$port LOCKEX_LOCKID=demo

job='echo "   [$NAME] working, node ${LOCKEX_LOCK_NODE##*/}, fencing token $LOCKEX_FENCING_TOKEN"; sleep 1.5; echo "   [$NAME] done"'
echo "== two hosts, alpha and beta, each run the job twice on the lock /lockex/demo"
pids=()
for name in alpha beta; do
	(for round in 1 2; do NAME=$name "$lockex" -- sh -c "$job"; sleep 0.2; done) &
	pids+=($!)
done
wait "${pids[@]}"

echo "== while alpha holds the lock, gamma asks with --no-blocking and gives up at once"
NAME=alpha "$lockex" -- sh -c "$job" &
alpha=$!
sleep 0.5
set +e
NAME=gamma "$lockex" --no-blocking -- sh -c "$job"
echo "   gamma exited $? (75: lock taken)"
set -e
wait "$alpha"
