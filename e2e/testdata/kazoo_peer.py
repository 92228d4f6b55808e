#!/usr/bin/python3
"""A kazoo peer for lockex's interoperability tests and its soak.

Runs Debian's python3-kazoo, the library the original Python lockex used:

  kazoo_peer.py HOSTS lock PATH IDENT LOG WHO HOLD          take Lock, record, hold, release
  kazoo_peer.py HOSTS semaphore PATH IDENT N LOG WHO HOLD   the same with Semaphore(N)
  kazoo_peer.py HOSTS try-lock PATH IDENT                   non-blocking Lock: exit 0 taken, 75 busy
  kazoo_peer.py HOSTS try-semaphore PATH IDENT N            non-blocking Semaphore(N), the same;
                                                            exit 3 when kazoo refuses the size
  kazoo_peer.py HOSTS hold-lock PATH IDENT                  take Lock, print "held", release at EOF on stdin
  kazoo_peer.py HOSTS contenders PATH                       print Lock(PATH).contenders() as JSON
  kazoo_peer.py HOSTS sem-ticker PATH IDENT N LOG WHO HOLD BG SESSION
      take Semaphore(N) on a SESSION-second session and tick as the soak's
      ticker workload does: "start", a "tick" every 10ms until HOLD seconds
      have passed, then "end", and release (exit 0). With BG=1 a second
      thread writes "bg" records as well, as a workload's background child
      would. The moment the connection is suspended or lost, both stop
      writing and the peer exits 76, as a careful kazoo application does:
      kazoo notices a silent connection after 2/3 of the session timeout,
      before the server can have expired the session. Exit 69 when the
      semaphore could not be taken for want of ZooKeeper.

Records are lockex's recorder format: "start|end <unix ns> <who> <czxid>";
the ticker's adds "tick" and "bg".
"""
import json
import sys
import threading
import time

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError


def record(log, event, who, token):
    with open(log, "a") as f:
        f.write("%s %d %s %d\n" % (event, time.time_ns(), who, token))


def main(argv):
    hosts, cmd, path = argv[1], argv[2], argv[3]
    if cmd == "sem-ticker":
        return sem_ticker(hosts, path, *argv[4:])
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


def sem_ticker(hosts, path, ident, n, log, who, hold, bg, session):
    # Set from kazoo's connection thread whenever the connection is not up;
    # cleared only once the lease is seen to belong to the live session.
    lost = threading.Event()
    zk = KazooClient(hosts=hosts, timeout=float(session))
    zk.add_listener(lambda state: lost.set() if state != KazooState.CONNECTED else None)
    try:
        try:
            zk.start(timeout=10)
            sem = zk.Semaphore(path, ident, max_leases=int(n))
            sem.acquire()
            # A suspension while waiting is harmless if the lease we got is
            # our live session's: look after clearing, so that a later
            # suspension sets lost again.
            lost.clear()
            stat = zk.exists(sem.create_path)
        except (KazooException, KazooTimeoutError) as e:
            print("kazoo peer %s: no lease: %r" % (who, e), file=sys.stderr)
            return 69
        if stat is None or stat.ephemeralOwner != zk.client_id[0]:
            return 76
        token = stat.czxid

        def tick(event):
            # Check lost before every write, never after a wait.
            while not lost.is_set() and time.monotonic() < end:
                record(log, event, who, token)
                lost.wait(0.01)

        end = time.monotonic() + float(hold)
        if lost.is_set():
            return 76
        record(log, "start", who, token)
        threads = []
        if bg == "1":
            threads.append(threading.Thread(target=tick, args=("bg",)))
            threads[0].start()
        tick("tick")
        for th in threads:
            th.join()
        if lost.is_set():
            return 76
        record(log, "end", who, token)
        try:
            sem.release()
        except KazooException:
            pass  # the session's end below removes the lease
        return 0
    finally:
        zk.stop()
        zk.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
