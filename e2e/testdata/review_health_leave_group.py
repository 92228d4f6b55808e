"""A --health-cmd for the review tests: review_health_leave_group.py DIR
MARK. It notes each run in DIR/checks and passes; while DIR/hang exists
it hangs instead, its main process out of the process group lockex made
for it: it starts a child in a new group and joins that group (setpgid,
open to a group leader), then both run DIR/lo-MARK (a link to sleep, so
the test finds them by their name)."""
import os
import sys

d, mark = sys.argv[1], sys.argv[2]
leftover = os.path.join(d, "lo-" + mark)
with open(os.path.join(d, "checks"), "a") as f:
    f.write("check\n")
if os.path.exists(os.path.join(d, "hang")):
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        os.execv(leftover, [leftover, "1000"])
    try:
        os.setpgid(child, child)  # whichever of the two comes first
    except OSError:
        pass
    os.setpgid(0, child)
    os.execv(leftover, [leftover, "1000"])
