#!/usr/bin/env python3
"""Raw client of BIRD's control socket: prints the welcome line, then sends each command and
writes its raw reply (every line as sent, codes kept) to OUTDIR/<name>.txt. A reply ends at a
line whose 4-digit code starts with 0, 8 or 9 and is followed by a space (BIRD's last line)."""
import re, socket, sys

def read_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("socket closed mid-reply")
        lines.append(line)
        if re.match(rb"^[089]\d{3} ", line):
            return b"".join(lines)

def main():
    sock_path, outdir = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    f = s.makefile("rb")
    welcome = f.readline()
    open(f"{outdir}/welcome.txt", "wb").write(welcome)
    for spec in sys.argv[3:]:
        name, cmd = spec.split("=", 1)
        s.sendall(cmd.encode() + b"\n")
        open(f"{outdir}/{name}.txt", "wb").write(read_reply(f))

main()
