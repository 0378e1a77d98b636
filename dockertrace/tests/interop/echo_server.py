#!/usr/bin/env python3
"""A plain TCP echo server in the classic socket style.

Clean-room stand-in for the study's ``server.py`` (MohammadHosseinali/DockerTracing), used by
dockertrace's interop tests: one thread per connection, ``recv(1024)`` and ``sendall`` of
whatever arrived, until the client closes. It binds 127.0.0.1 by default and prints
``PORT <n>`` on stdout once listening (use ``--port 0`` for an ephemeral port).
"""

import argparse
import socket
import sys
import threading


def handle(conn):
    """Echo everything received on ``conn`` until EOF."""
    with conn:
        try:
            while True:
                data = conn.recv(1024)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10000)
    args = parser.parse_args()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = socket.create_server((args.host, args.port), family=family, reuse_port=False)
    print(f"PORT {server.getsockname()[1]}", flush=True)
    with server:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
