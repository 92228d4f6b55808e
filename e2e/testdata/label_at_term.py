"""A workload that, when it gets SIGTERM, looks at its own pod in the
Kubernetes API, as a client routed by a Service would find it, and writes
the pod's labels (JSON) to OUT before it exits: what the test of draining
reads to see whether the label was gone before the workload was told to
stop. Usage: label_at_term.py URL CAFILE TOKENFILE OUT, where URL is the
pod's API path in full."""
import json
import signal
import ssl
import sys
import time
import urllib.request

url, cafile, tokenfile, out = sys.argv[1:5]


def on_term(signum, frame):
    with open(tokenfile) as f:
        token = f.read().strip()
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    ctx = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        labels = json.load(resp)["metadata"].get("labels", {})
    with open(out, "w") as f:
        json.dump(labels, f)
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
with open(out + ".started", "w") as f:
    f.write("started\n")
# Bounded: a test that never stops it ends within two minutes anyway.
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit("never told to stop")
