#!/usr/bin/env python3
"""A raw DNS query for netwright's tests: dnsq.py NAME [TYPE] [SERVER] [tcp]

Prints the response code, then one answer per line (A, AAAA: address, PTR: name).
Exit 0 on any answer, 2 when no answer arrived within 4 s."""
import random
import socket
import struct
import sys

TYPES = {"A": 1, "PTR": 12, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def encode(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def read_name(msg, off):
    labels = []
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            ptr = struct.unpack(">H", msg[off:off + 2])[0] & 0x3FFF
            labels.append(read_name(msg, ptr)[0])
            return ".".join(labels), off + 2
        off += 1
        if n == 0:
            return ".".join(labels), off
        labels.append(msg[off:off + n].decode())
        off += n


def main():
    name = sys.argv[1]
    qtype = TYPES[sys.argv[2]] if len(sys.argv) > 2 else 1
    server = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.11"
    tcp = len(sys.argv) > 4 and sys.argv[4] == "tcp"
    qid = random.randint(0, 65535)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode(name) + struct.pack(">HH", qtype, 1)
    try:
        if tcp:
            s = socket.create_connection((server, 53), timeout=4)
            s.sendall(struct.pack(">H", len(query)) + query)
            ln = struct.unpack(">H", s.recv(2))[0]
            msg = b""
            while len(msg) < ln:
                msg += s.recv(ln - len(msg))
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(4)
            s.sendto(query, (server, 53))
            msg = s.recvfrom(65535)[0]
    except OSError as e:
        print(f"no answer: {e}", file=sys.stderr)
        sys.exit(2)
    flags, qd, an = struct.unpack(">HHH", msg[2:8])
    print(RCODES.get(flags & 0xF, str(flags & 0xF)) + (" TC" if flags & 0x200 else ""))
    off = 12
    for _ in range(qd):
        off = read_name(msg, off)[1] + 4
    for _ in range(an):
        _, off = read_name(msg, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        if rtype == 1:
            print(socket.inet_ntoa(msg[off:off + 4]))
        elif rtype == 28:
            print(socket.inet_ntop(socket.AF_INET6, msg[off:off + 16]))
        elif rtype == 12:
            print(read_name(msg, off)[0])
        off += rdlen


main()
