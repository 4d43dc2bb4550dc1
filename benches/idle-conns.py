#!/usr/bin/env python3
"""Hold N idle keep-alive connections open to a proxy, for measuring its RSS.

Usage: idle-conns.py PORT N HOLD_SECONDS

Opens N connections to 127.0.0.1:PORT, sends one GET on each and reads its
response, so every connection is an idle keep-alive connection in the proxy.
Prints "ready N" once all are open, holds them for HOLD_SECONDS, then exits
(closing them). Bounded in count and time by its arguments.
"""
import socket
import sys
import time


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response body ended")
        body += chunk


def main():
    port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    conns = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        read_response(sock)
        conns.append(sock)
    print(f"ready {len(conns)}", flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
