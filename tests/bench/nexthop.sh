#!/usr/bin/env bash
# Kernel-side cost of a route written `via GW` against one written `nhid N` (issue 4): installs
# N /24s with batched netlink (64 KiB of RTM_NEWROUTE per sendmsg, one ACK per chunk, as routed's
# reconciler does) into a fresh namespace, once each way, ROUNDS times alternating, and prints the
# wall and system time of each install. The requests are built before the clock starts, so the
# times are the kernel's. Root; not run in CI. Needs python3 and iproute2.
# Usage: tests/bench/nexthop.sh [N]   (default 1000000)   ROUNDS=3
set -euo pipefail
N=${1:-1000000}
ROUNDS=${ROUNDS:-3}
NS=rnh$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
install() {
    ip netns exec "$NS" python3 - "$1" "$N" <<'PY'
import os, socket, struct, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
s.bind((0, 0))
def attr(kind, value):
    length = 4 + len(value)
    return struct.pack("HH", length, kind) + value + b"\0" * ((4 - length % 4) % 4)
chunks, chunk, seq = [], b"", 1
for i in range(n):
    dst = bytes([20 + ((i >> 16) & 0xff), (i >> 8) & 0xff, i & 0xff, 0])
    # rtmsg: AF_INET, /24, table main, protocol 232, scope universe, unicast
    body = struct.pack("BBBBBBBBI", 2, 24, 0, 0, 254, 232, 0, 1, 0) + attr(1, dst)
    body += attr(5, bytes([10, 9, 0, 2])) if mode == "via" else attr(30, struct.pack("I", 7))
    if len(chunk) + 16 + len(body) > 65536:
        chunks.append((chunk, seq - 1)); chunk = b""
    chunk += struct.pack("IHHII", 16 + len(body), 24, 0x501, seq, 0) + body  # REQUEST|REPLACE|CREATE
    seq += 1
chunks.append((chunk, seq - 1))
def with_ack(chunk, last):
    # NLM_F_ACK on the chunk's last message only.
    off = 0
    while True:
        length = struct.unpack_from("I", chunk, off)[0]
        if off + length >= len(chunk):
            flags = struct.unpack_from("H", chunk, off + 6)[0] | 4
            return chunk[:off + 6] + struct.pack("H", flags) + chunk[off + 8:]
        off += length
chunks = [(with_ack(c, last), last) for c, last in chunks]
t0, c0 = time.time(), os.times()
for chunk, last in chunks:
    s.send(chunk)
    done = False
    while not done:
        data, off = s.recv(1 << 20), 0
        while off < len(data):
            length, kind, _, sq, _ = struct.unpack_from("IHHII", data, off)
            if kind == 2:
                err = struct.unpack_from("i", data, off + 16)[0]
                if err:
                    sys.exit(f"route {sq}: errno {-err}")
                done |= sq == last
            off += (length + 3) & ~3
t1, c1 = time.time(), os.times()
print(f"| {mode} | {n} | {t1 - t0:.2f} | {c1.system - c0.system:.2f} | {n / (t1 - t0):,.0f} |")
PY
}
echo "| route form | routes | wall (s) | system (s) | routes/s |"
echo "|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
    for mode in via nhid; do
        cleanup
        ip netns add "$NS"
        ip -n "$NS" link add d0 type veth peer name d1
        ip -n "$NS" link set d0 up
        ip -n "$NS" link set d1 up
        ip -n "$NS" addr add 10.9.0.1/24 dev d0
        ip -n "$NS" nexthop add id 7 via 10.9.0.2 dev d0 proto 232
        install "$mode"
        [ "$(ip -n "$NS" route show proto 232 | wc -l)" -eq "$N" ] || { echo "route count mismatch" >&2; exit 1; }
    done
done
