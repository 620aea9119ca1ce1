#!/usr/bin/env python3
"""Tiny TCP/UDP peers for netwright's sandboxes (tests and demo).

  tcp.py serve PORT [tcp|udp]        answer every message with "<hostname> <message>"
  tcp.py send HOST PORT MSG [tcp|udp] print the answer; exit 1 if none within 3 s
"""
import socket
import socketserver
import sys


def dual_stack():
    """Both families on one socket where the namespace has IPv6 (:: with V6ONLY off)."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        s.close()
        return True
    except OSError:
        return False


def peer_name(addr):
    # An IPv4 client on the dual-stack socket shows as ::ffff:a.b.c.d.
    return addr[0].removeprefix("::ffff:")


def serve(port, proto):
    name = socket.gethostname().encode()
    six = dual_stack()
    if proto == "udp":
        s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
        if six:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::" if six else "0.0.0.0", port))
        print(f"serving udp/{port}", flush=True)
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(name + b" " + data, peer)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            data = self.request.recv(65535)
            # The peer's address as the server sees it: tests check NAT with it.
            self.request.sendall(name + b" " + data + b" from " + peer_name(self.client_address).encode())

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        address_family = socket.AF_INET6 if six else socket.AF_INET

        def server_bind(self):
            if six:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    with Server(("::" if six else "0.0.0.0", port), Handler) as srv:
        print(f"serving tcp/{port}", flush=True)
        srv.serve_forever()


def send(host, port, msg, proto):
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.sendto(msg.encode(), (host, port))
            print(s.recvfrom(65535)[0].decode())
        else:
            s = socket.create_connection((host, port), timeout=3)
            s.sendall(msg.encode())
            s.shutdown(socket.SHUT_WR)
            print(s.recv(65535).decode())
    except OSError as e:
        print(f"no answer from {host}:{port}/{proto}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a and a[0] == "serve":
        serve(int(a[1]), a[2] if len(a) > 2 else "tcp")
    elif a and a[0] == "send":
        send(a[1], int(a[2]), a[3], a[4] if len(a) > 4 else "tcp")
    else:
        sys.exit(__doc__)
