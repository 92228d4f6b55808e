#!/usr/bin/python3
"""A kazoo peer for lockex's interoperability tests.

Runs Debian's python3-kazoo, the library the original Python lockex used:

  kazoo_peer.py HOSTS lock PATH IDENT LOG WHO HOLD          take Lock, record, hold, release
  kazoo_peer.py HOSTS semaphore PATH IDENT N LOG WHO HOLD   the same with Semaphore(N)
  kazoo_peer.py HOSTS try-lock PATH IDENT                   non-blocking Lock: exit 0 taken, 75 busy
  kazoo_peer.py HOSTS try-semaphore PATH IDENT N            non-blocking Semaphore(N), the same;
                                                            exit 3 when kazoo refuses the size
  kazoo_peer.py HOSTS hold-lock PATH IDENT                  take Lock, print "held", release at EOF on stdin
  kazoo_peer.py HOSTS contenders PATH                       print Lock(PATH).contenders() as JSON

Records are lockex's recorder format: "start|end <unix ns> <who> <czxid>".
"""
import json
import sys
import time

from kazoo.client import KazooClient


def record(log, event, who, token):
    with open(log, "a") as f:
        f.write("%s %d %s %d\n" % (event, time.time_ns(), who, token))


def main(argv):
    hosts, cmd, path = argv[1], argv[2], argv[3]
    zk = KazooClient(hosts=hosts, timeout=10)
    zk.start(timeout=10)
    try:
        if cmd == "contenders":
            print(json.dumps(zk.Lock(path).contenders()))
            return 0
        ident = argv[4]
        if cmd in ("lock", "try-lock", "hold-lock"):
            recipe = zk.Lock(path, ident)
            own = lambda: path + "/" + recipe.node
        else:
            recipe = zk.Semaphore(path, ident, max_leases=int(argv[5]))
            own = lambda: recipe.create_path
            argv = argv[:5] + argv[6:]
        if cmd.startswith("try-"):
            try:
                if not recipe.acquire(blocking=False):
                    return 75
            except ValueError as e:  # kazoo's "Inconsistent max leases"
                print(e, file=sys.stderr)
                return 3
            recipe.release()
            return 0
        recipe.acquire()
        if cmd == "hold-lock":
            print("held", flush=True)
            sys.stdin.read()
        else:
            log, who, hold = argv[5], argv[6], float(argv[7])
            token = zk.exists(own()).czxid
            record(log, "start", who, token)
            time.sleep(hold)
            record(log, "end", who, token)
        recipe.release()
        return 0
    finally:
        zk.stop()
        zk.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
