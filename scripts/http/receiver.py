#!/usr/bin/env python3
"""An HTTP server on 127.0.0.1 for Wayback's tests: each POST is answered 200 "ok" and saved as
<out>/<n>.json: {"path", "headers", "body"} (the body as text). Prints its port; runs until killed."""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        n = time.time_ns()
        with open(os.path.join(out, f"{n}.tmp"), "w") as f:
            json.dump({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": body.decode("utf-8")}, f)
        os.rename(os.path.join(out, f"{n}.tmp"), os.path.join(out, f"{n}.json"))
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
