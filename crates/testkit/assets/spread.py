#!/usr/bin/env python3
"""Load spreading for netwright's service tests and bench.

  spread.py serve PORT              answer every line of a connection with "<hostname>"
  spread.py count HOST PORT N       N new connections, one line each; print {"<host>": n}
  spread.py cached NAME PORT N      the same, resolving NAME once (a caching client)
  spread.py hold HOST PORT          one connection: a line per stdin line, print answers
"""
import json
import socket
import sys


def serve(port):
    import socketserver

    name = socket.gethostname().encode()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            for _ in self.rfile:
                self.wfile.write(name + b"\n")
                self.wfile.flush()

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("0.0.0.0", port), Handler) as srv:
        print(f"serving tcp/{port}", flush=True)
        srv.serve_forever()


def ask(f, s):
    s.sendall(b"x\n")
    return f.readline().decode().strip()


def count(host, port, n):
    counts, failed = {}, 0
    for _ in range(n):
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                name = ask(s.makefile("rb"), s)
                counts[name] = counts.get(name, 0) + 1
        except OSError:
            failed += 1
    if failed:
        counts["(failed)"] = failed
    print(json.dumps(counts), flush=True)


def hold(host, port):
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rb")
    print(ask(f, s), flush=True)
    for _ in sys.stdin:
        try:
            print(ask(f, s) or "(closed)", flush=True)
        except OSError as e:
            print(f"(error {e})", flush=True)


def cached(name, port, n):
    # One lookup, its first address kept for every connection, as most clients do.
    addr = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    count(addr, port, n)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:1] == ["serve"]:
        serve(int(a[1]))
    elif a[:1] == ["count"]:
        count(a[1], int(a[2]), int(a[3]))
    elif a[:1] == ["cached"]:
        cached(a[1], int(a[2]), int(a[3]))
    elif a[:1] == ["hold"]:
        hold(a[1], int(a[2]))
    else:
        sys.exit(__doc__)
