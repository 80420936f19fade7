#!/usr/bin/env python3
"""A loopback fault proxy for the S3 tests (standard library only).

usage: fault_proxy.py UPSTREAM_URL LOG_FILE [FAULTS [MODE [CERT KEY]]]

Listens on 127.0.0.1 (a free port, printed as the first line on stdout), records every request
(method, path, Authorization, x-amz-date, Range, If-Match) as one JSON line in LOG_FILE and
forwards requests unchanged to UPSTREAM_URL (http://127.0.0.1:PORT), relaying the answer. The
Host header is forwarded as sent, so the client's signature stays valid.

MODE `slowdown` (default): the first FAULTS requests are answered with `503 SlowDown`.
MODE `truncate`: the first FAULTS answers are cut after half of their body and the connection
closed (the client sees a short transfer after some bytes arrived).
MODE `delay`: FAULTS is a number of milliseconds by which every ranged GET and every copy (PUT with
x-amz-copy-source) is held before it is forwarded: a slow S3 for tests that must catch an import in
the middle (reading its data, or moving it to processed/).
With CERT and KEY (PEM files) the proxy speaks HTTPS to its clients (plain HTTP upstream).
"""
import http.client
import http.server
import json
import ssl
import sys
import threading
import time
import urllib.parse

upstream = urllib.parse.urlsplit(sys.argv[1])
log_path = sys.argv[2]
faults = int(sys.argv[3]) if len(sys.argv) > 3 else 0
mode = sys.argv[4] if len(sys.argv) > 4 else "slowdown"
lock = threading.Lock()
seen = 0

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message><RequestId>FAULTPROXY</RequestId></Error>')


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to report

    def handle_any(self):
        global seen
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with lock:
            seen += 1
            number = seen
            with open(log_path, "a") as log:
                log.write(json.dumps({
                    "n": number, "method": self.command, "path": self.path,
                    "authorization": self.headers.get("Authorization", ""),
                    "date": self.headers.get("x-amz-date", ""),
                    "range": self.headers.get("Range", ""),
                    "ifMatch": self.headers.get("If-Match", ""),
                }) + "\n")
        if number <= faults and mode == "slowdown":
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        if mode == "delay" and ((self.command == "GET" and self.headers.get("Range"))
                                or (self.command == "PUT" and self.headers.get("x-amz-copy-source"))):
            time.sleep(faults / 1000)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body if body else None)
        answer = conn.getresponse()
        data = answer.read()
        self.send_response(answer.status, answer.reason)
        for k, v in answer.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        # A HEAD answer has no body: its Content-Length is the object's size, relayed as sent.
        length = answer.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length if length is not None else str(len(data)))
        self.end_headers()
        conn.close()
        if number <= faults and mode == "truncate" and self.command == "GET" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 6:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[5], sys.argv[6])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
