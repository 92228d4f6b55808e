"""A workload that serves readiness over HTTP, as a web app would, for the
tests of --active-http and --active-tcp. It starts listening on PORT only
once DIR/serve exists, answers GET /ready with 503 while DIR/sick exists and
200 otherwise, and appends "start" and "serving" to DIR/log."""
import http.server
import os
import sys
import time

port, d = int(sys.argv[1]), sys.argv[2]


def note(what):
    with open(os.path.join(d, "log"), "a") as f:
        f.write(what + "\n")


note("start")
# Bounded: a test that never lets it serve ends within a minute anyway.
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(d, "serve")):
    if time.monotonic() > deadline:
        sys.exit("never told to serve")
    time.sleep(0.02)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists(os.path.join(d, "sick"))
        self.send_response(503 if sick or self.path != "/ready" else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", port), Handler)
note("serving")
server.serve_forever()
