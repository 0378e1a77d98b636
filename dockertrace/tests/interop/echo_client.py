#!/usr/bin/env python3
"""A plain TCP echo client in the classic socket style.

Clean-room stand-in for the study's ``client.py`` (MohammadHosseinali/DockerTracing), used by
dockertrace's interop tests: connect, then ``--count`` times send a ``--size``-byte message
(42 by default) and read until the whole echo is back. Exits 0 when every echo matched.
"""

import argparse
import socket
import sys


def recv_exact(sock, n):
    """Read exactly ``n`` bytes; the echo may arrive in pieces."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"server closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--size", type=int, default=42)
    args = parser.parse_args()

    base = b"hello from the python echo client #"
    body = (base * (args.size // len(base) + 1))[: args.size]
    with socket.create_connection((args.host, args.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(args.count):
            message = bytes([ord("a") + i % 26]) + body[1:]
            sock.sendall(message)
            echo = recv_exact(sock, len(message))
            if echo != message:
                print(f"echo mismatch on message {i}", file=sys.stderr)
                return 1
    print(f"OK {args.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
