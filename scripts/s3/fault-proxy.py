#!/usr/bin/env python3
"""An HTTP proxy for fault-injection tests, between Wayback and an S3 server, on 127.0.0.1 only.

Usage: fault-proxy.py LISTEN_PORT UPSTREAM_PORT STATS_FILE [--faults RATE] [--seed N]

For each request it picks, with probability RATE in all (default 0.15):
  - an error answer without forwarding: 500 InternalError, 503 SlowDown or 503 ServiceUnavailable;
  - a delay of 0.5 to 2.5 s before forwarding;
  - a connection reset before forwarding (the request is lost);
  - a connection reset in the middle of the response (the request was executed, the answer is
    cut: for a GET the body stops partway).
Otherwise it forwards the request as it is. STATS_FILE is rewritten with the counts as JSON after
every request.
"""
import json
import random
import socket
import struct
import sys
import threading
import time

args = sys.argv[1:]
listen_port, upstream_port, stats_file = int(args[0]), int(args[1]), args[2]
rate = float(args[args.index("--faults") + 1]) if "--faults" in args else 0.15
rng = random.Random(int(args[args.index("--seed") + 1]) if "--seed" in args else None)
lock = threading.Lock()
stats = {"requests": 0, "forwarded": 0, "error": 0, "delay": 0, "reset_before": 0, "reset_during": 0}


def count(kind):
    with lock:
        stats[kind] += 1
        with open(stats_file + ".tmp", "w") as f:
            json.dump(stats, f)
        import os
        os.replace(stats_file + ".tmp", stats_file)


def read_request(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(max(65536, length - len(rest)))
        if not chunk:
            return None, b""
        rest += chunk
    return (lines, rest[:length]), rest[length:]


def reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def forward(lines, body):
    out = [lines[0]] + [l for l in lines[1:] if not l.lower().startswith(b"connection:")] + [b"Connection: close"]
    up = socket.create_connection(("127.0.0.1", upstream_port))
    up.sendall(b"\r\n".join(out) + b"\r\n\r\n" + body)
    data = b""
    while True:
        chunk = up.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    up.close()
    return data


def handle(conn):
    buf = b""
    try:
        while True:
            req, buf = read_request(conn, buf)
            if req is None:
                conn.close()
                return
            lines, body = req
            count("requests")
            r = rng.random()
            share = rate / 4
            if r < share:
                count("error")
                code, status, reason = rng.choice([(500, "InternalError", "Internal Server Error"),
                                                   (503, "SlowDown", "Slow Down"),
                                                   (503, "ServiceUnavailable", "Service Unavailable")])
                xml = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{status}</Code><Message>injected</Message></Error>".encode()
                conn.sendall(f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(xml)}\r\n\r\n".encode() + xml)
                continue
            if r < 2 * share:
                count("delay")
                time.sleep(rng.uniform(0.5, 2.5))
            elif r < 3 * share:
                count("reset_before")
                reset(conn)
                return
            response = forward(lines, body)
            if 3 * share <= r < rate and len(response) > 0:
                count("reset_during")
                conn.sendall(response[: max(1, len(response) // 2)])
                reset(conn)
                return
            count("forwarded")
            # The upstream answered with Connection: close semantics; keep ours alive if it had a length.
            conn.sendall(response)
            head = response.split(b"\r\n\r\n", 1)[0].lower()
            if b"content-length" not in head:
                conn.close()
                return
    except (ConnectionError, OSError):
        try:
            conn.close()
        except OSError:
            pass


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(64)
    count("requests")
    with lock:
        stats["requests"] -= 1
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
