#!/usr/bin/env python3
"""Scripted BGP peer (AS 64512): accepts one connection from a daemon, completes the handshake
(multiprotocol IPv4, route refresh, 4-octet AS, graceful restart), records every message it
receives (one "TYPE hex" line each), runs a shell command that makes the daemon send a
ROUTE-REFRESH, then sends one bad message (argv[4]) to draw a NOTIFICATION.
usage: peer.py LISTEN_ADDR OUT_FILE REFRESH_COMMAND marker|length|update"""
import socket, struct, subprocess, sys, time

listen, out_path, refresh_cmd, probe = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
TYPES = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}

def msg(t, body):
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), t) + body

caps = bytes.fromhex("0104000100010200" "41040000fc00" "40060078000101" "00")
params = b"\x02" + bytes([len(caps)]) + caps
open_body = struct.pack("!BHH4sB", 4, 23456, 90, socket.inet_aton(listen), len(params)) + params

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((listen, 179))
srv.listen(1)
srv.settimeout(60)
conn, _ = srv.accept()
conn.settimeout(0.5)
buf = b""
log = []

def pump(seconds):
    global buf
    end = time.time() + seconds
    while time.time() < end:
        try:
            data = conn.recv(65536)
        except socket.timeout:
            data = None
        except OSError:
            return False
        if data == b"":
            return False
        if data:
            buf += data
        while len(buf) >= 19:
            length = struct.unpack("!H", buf[16:18])[0]
            if len(buf) < length:
                break
            m, buf = buf[:length], buf[length:]
            t = m[18]
            log.append((TYPES.get(t, str(t)), m.hex()))
            if t == 4:
                conn.sendall(msg(4, b""))
    return True

pump(2)  # daemon's OPEN
conn.sendall(msg(1, open_body))
conn.sendall(msg(4, b""))
pump(8)  # KEEPALIVE, UPDATEs, End-of-RIB
subprocess.run(refresh_cmd, shell=True)
pump(4)  # ROUTE-REFRESH
conn.sendall({
    "marker": b"\xfe" + b"\xff" * 15 + struct.pack("!HB", 19, 4),
    "length": b"\xff" * 16 + struct.pack("!HB", 20, 4) + b"\x00",
    "update": msg(2, bytes.fromhex("0000ffff")),
}[probe])
pump(3)  # NOTIFICATION 1/1
with open(out_path, "w") as f:
    for label, h in log:
        f.write(f"{label} {h}\n")
