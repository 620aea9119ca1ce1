#!/usr/bin/env python3
"""An upstream DNS server for netwright's tests: fakedns.py [PORT]

Every A query gets 198.51.100.7. A name starting with "big" gets a truncated UDP answer
(TC set, no records) and its full answer, 198.51.100.8, only over TCP."""
import socket
import struct
import sys
import threading


def reply(query, over_tcp):
    qid, _, qd = struct.unpack(">HHH", query[:6])
    off = 12
    while query[off]:
        off += query[off] + 1
    end = off + 5
    qname = query[12:off + 1]
    first = qname[1:1 + qname[0]].decode(errors="replace")
    question = query[12:end]
    big = first.startswith("big")
    if big and not over_tcp:
        return struct.pack(">HHHHHH", qid, 0x8380, 1, 0, 0, 0) + question
    addr = "198.51.100.8" if big else "198.51.100.7"
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(addr)
    return struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        q, peer = s.recvfrom(4096)
        s.sendto(reply(q, False), peer)


def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        ln = struct.unpack(">H", c.recv(2))[0]
        q = c.recv(ln)
        r = reply(q, True)
        c.sendall(struct.pack(">H", len(r)) + r)
        c.close()


port = int(sys.argv[1]) if len(sys.argv) > 1 else 53
threading.Thread(target=tcp, args=(port,), daemon=True).start()
print(f"fake dns on {port}", flush=True)
udp(port)
