#!/usr/bin/env python3
"""A key-value TCP server for the demo: SET key value / GET key, one command a line."""
import socketserver

data = {}


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            words = line.decode().split()
            if len(words) >= 3 and words[0].upper() == "SET":
                data[words[1]] = " ".join(words[2:])
                self.wfile.write(b"+OK\n")
            elif len(words) == 2 and words[0].upper() == "GET":
                self.wfile.write((data.get(words[1], "(nil)") + "\n").encode())
            else:
                self.wfile.write(b"-ERR use SET key value | GET key\n")


socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("0.0.0.0", 6379), Handler) as srv:
    srv.serve_forever()
