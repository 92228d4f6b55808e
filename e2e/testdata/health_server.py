"""A workload with a health endpoint, as a web app has, for the tests of
--health-url. It listens on PORT at once and answers GET /health with 503
while DIR/sick exists and 200 otherwise; while DIR/hang exists it does not
answer (for at most a minute). It appends "start PID UNIX_NS" to DIR/log
as it starts, and "check" for each request."""
import http.server
import os
import sys
import time

port, d = int(sys.argv[1]), sys.argv[2]


def note(what):
    with open(os.path.join(d, "log"), "a") as f:
        f.write(what + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        note("check")
        deadline = time.monotonic() + 60
        while os.path.exists(os.path.join(d, "hang")) and time.monotonic() < deadline:
            time.sleep(0.02)
        sick = os.path.exists(os.path.join(d, "sick"))
        self.send_response(503 if sick or self.path != "/health" else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
note("start %d %d" % (os.getpid(), time.time_ns()))
server.serve_forever()
