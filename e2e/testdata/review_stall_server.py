"""A workload for the review tests of --health-url: review_stall_server.py
PORT DIR. It answers GET with 200 and a body of 1000 bytes; while
DIR/stall exists it sends the status and 2 bytes of the body, then hangs
(for at most a minute). It appends "check" to DIR/log for each request."""
import http.server
import os
import sys
import time

port, d = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(d, "log"), "a") as f:
            f.write("check\n")
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        if not os.path.exists(os.path.join(d, "stall")):
            self.wfile.write(b"x" * 1000)
            return
        self.wfile.write(b"ok")
        self.wfile.flush()
        deadline = time.monotonic() + 60
        while os.path.exists(os.path.join(d, "stall")) and time.monotonic() < deadline:
            time.sleep(0.02)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
