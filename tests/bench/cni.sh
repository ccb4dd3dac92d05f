#!/usr/bin/env bash
# CNI ADD/DEL latency: routed-cni (agent on etcd) beside Debian's ptp + host-local, the same way,
# in the same run. Each plugin is called as libcni calls it (environment + config on stdin), from
# inside a node network namespace, for N pods (default 200). Namespace creation is not timed.
# Usage: tests/bench/cni.sh [N]   (root; prints a markdown table for docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-200}
[ "$(id -u)" = 0 ] || { echo "cni.sh needs root (network namespaces)" >&2; exit 1; }
for p in etcd etcdctl /usr/lib/cni/ptp /usr/lib/cni/host-local; do
  command -v "$p" >/dev/null || [ -x "$p" ] || { echo "missing $p (apt-get install etcd-server etcd-client containernetworking-plugins)" >&2; exit 1; }
done
# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND; gives up with a message after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "cni.sh: gave up waiting for $what (see $work/*.log)" >&2; exit 1; }
    sleep 0.1
  done
}
cargo build --release --quiet --bin routed --bin routed-cni --bin routectl
B=$PWD/target/release
work=$(mktemp -d)
tag=$$
node=rtb-node-$tag; rtr=rtb-rtr-$tag
port=$((20000 + RANDOM % 20000))
cleanup() {
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "${etcd_pid:-}" ] && kill "$etcd_pid" 2>/dev/null || true
  for i in $(seq 1 "$N"); do ip netns del "rtb-$tag-r$i" 2>/dev/null || true; ip netns del "rtb-$tag-p$i" 2>/dev/null || true; done
  ip netns del "$node" 2>/dev/null || true; ip netns del "$rtr" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$node"; ip netns add "$rtr"
ip -n "$node" link set lo up
ip -n "$node" link add uplink type veth peer name down0 netns "$rtr"
ip -n "$node" addr add 192.0.2.1/24 dev uplink; ip -n "$node" link set uplink up
ip -n "$node" route add default via 192.0.2.254
# etcd runs inside the node namespace, on its loopback, so the agent reaches it there.
ip netns exec "$node" etcd --name b --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$port" \
  --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "b=http://127.0.0.1:$((port + 1))" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
wait_until 30 "etcd to answer" ip netns exec "$node" etcdctl --endpoints "127.0.0.1:$port" endpoint health
DS="etcd://127.0.0.1:$port"
ip netns exec "$node" "$B/routectl" --datastore "$DS" pool create bench --cidr 10.81.0.0/16 >/dev/null

ip netns exec "$node" "$B/routed" --node-name bench --datastore "$DS" --ip 192.0.2.1/24 \
  --socket "$work/agent.sock" >"$work/agent.log" 2>&1 &
agent_pid=$!
wait_until 60 "the agent's socket" test -S "$work/agent.sock"
sleep 0.5

for i in $(seq 1 "$N"); do ip netns add "rtb-$tag-r$i"; ip netns add "rtb-$tag-p$i"; done

routed_conf="{\"cniVersion\":\"1.0.0\",\"name\":\"routed\",\"type\":\"routed-cni\",\"socket\":\"$work/agent.sock\"}"
ptp_conf="{\"cniVersion\":\"1.0.0\",\"name\":\"ptpnet\",\"type\":\"ptp\",\"ipMasq\":false,\"ipam\":{\"type\":\"host-local\",\"subnet\":\"10.82.0.0/16\",\"dataDir\":\"$work/host-local\"}}"

# The timing loop runs inside the node namespace itself, so each call is just the plugin process.
ip netns exec "$node" python3 - "$work/times" "$N" "$tag" "$B/routed-cni" "$routed_conf" "$ptp_conf" <<'PY'
import os, subprocess, sys, time
out, n, tag, routed, routed_conf, ptp_conf = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
def call(plugin, cmd, cid, ns, conf):
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/var/run/netns/{ns}",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    t0 = time.perf_counter()
    p = subprocess.run([plugin], input=conf.encode(), env=env, capture_output=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{plugin} {cmd} {cid} failed: {p.stdout.decode()} {p.stderr.decode()}")
    return dt * 1e6
with open(out, "w") as f:
    for cmd in ("ADD", "DEL"):
        for i in range(1, n + 1):
            f.write(f"routed {cmd} {call(routed, cmd, f'r{i}', f'rtb-{tag}-r{i}', routed_conf):.0f}\n")
        for i in range(1, n + 1):
            f.write(f"ptp {cmd} {call('/usr/lib/cni/ptp', cmd, f'p{i}', f'rtb-{tag}-p{i}', ptp_conf):.0f}\n")
PY
python3 - "$work/times" "$N" <<'PY'
import sys, statistics
t = {}
for line in open(sys.argv[1]):
    who, cmd, us = line.split()
    t.setdefault((who, cmd), []).append(int(us) / 1000.0)
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, round((len(v) - 1) * p))]
print(f"| operation | routed-cni p50 ms | routed-cni p99 ms | ptp+host-local p50 ms | ptp+host-local p99 ms | p50 ratio (routed/ptp) |")
print("|---|---|---|---|---|---|")
for cmd in ("ADD", "DEL"):
    r, p = t[("routed", cmd)], t[("ptp", cmd)]
    print(f"| {cmd} ({sys.argv[2]} pods) | {pct(r,.5):.2f} | {pct(r,.99):.2f} | {pct(p,.5):.2f} | {pct(p,.99):.2f} | {pct(r,.5)/pct(p,.5):.2f} |")
PY
