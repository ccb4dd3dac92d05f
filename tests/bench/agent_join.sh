#!/usr/bin/env bash
# The whole agent joining a cluster (issue 14, item 4): a real etcd holding N synthetic Nodes
# with 4 block affinities each (seeded by `routectl bench follower`), then `routed` started as
# node-00000 and timed from its start to its first "BGP peers changed" (address detected, Node
# registered, datastore read in full, BGP speaker started, calc's peers handed to it). Both
# topologies: reflectors (mesh off, two reflectors peered by selector) and the full mesh. Runs in
# a network namespace of its own (etcd inside it on loopback, node-00000's address 100.64.0.1/10
# on a veth inside it); needs root.
# Usage: tests/bench/agent_join.sh [NODES...]   (default: 1000 5000)
# PROFILE=debug uses the debug build (default release). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${*:-1000 5000}
PROFILE=${PROFILE:-release}
[ "$(id -u)" = 0 ] || { echo "needs root (a network namespace of its own)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd not installed (apt-get install etcd-server)" >&2; exit 1; }
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin routectl --bin routed
else
  cargo build --quiet --bin routectl --bin routed
fi
R=target/$PROFILE
work=$(mktemp -d)
ns=rt-bjoin-$$
ip netns add "$ns"
etcd_pid=""
cleanup() {
  # `a && b` as the last command would end the trap under `set -e` when wait reports the
  # signal (status 143), leaving the namespace behind.
  if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip -n "$ns" link set lo up
ip -n "$ns" link add node0 type veth peer name node0-peer
ip -n "$ns" link set node0 up
ip -n "$ns" link set node0-peer up
ip -n "$ns" addr add 100.64.0.1/10 dev node0
port=2379
ip netns exec "$ns" etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:2380" --initial-advertise-peer-urls "http://127.0.0.1:2380" \
  --initial-cluster "bench=http://127.0.0.1:2380" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
url="etcd://127.0.0.1:$port"
for _ in $(seq 300); do # at most 30 s
  ip netns exec "$ns" env ROUTED_DATASTORE="$url" "$R/routectl" node list >/dev/null 2>&1 && break
  sleep 0.1
done

echo "| nodes × blocks | topology | follower's first state (ms) | whole agent: start → peers configured (ms) | peers |"
echo "|---|---|---|---|---|"
for n in $SIZES; do
  for topology in reflectors mesh; do
    flag=""; [ "$topology" = mesh ] && flag="--mesh"
    prefix="/join-$n-$topology/"
    follower=$(ip netns exec "$ns" env ROUTED_DATASTORE="$url" ROUTED_DATASTORE_PREFIX="$prefix" \
      "$R/routectl" bench follower --nodes "$n" --blocks 4 --changes 4 $flag -o json)
    python3 - "$ns" "$R/routed" "$url" "$prefix" "$work" "$n" "$topology" "$follower" <<'PY'
import json, os, re, signal, subprocess, sys, time
ns, routed, url, prefix, work, n, topology, follower = sys.argv[1:]
cmd = ["ip", "netns", "exec", ns, routed, "--node-name", "node-00000", "--datastore", url,
       "--datastore-prefix", prefix, "--ip", "100.64.0.1/10", "--socket", f"{work}/routed.sock",
       "--no-forward-rules"]
env = dict(os.environ, RUST_LOG="info")
began = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
joined, peers, log = None, "?", []
deadline = began + 120
for line in p.stdout:
    log.append(line)
    if "BGP peers changed" in line:
        joined = (time.monotonic() - began) * 1000
        m = re.search(r"peers=(\d+)", line)
        peers = m.group(1) if m else "?"
        break
    if time.monotonic() > deadline:
        break
p.send_signal(signal.SIGTERM)
try:
    p.wait(timeout=30)
except subprocess.TimeoutExpired:
    p.kill()
if joined is None:
    sys.exit("routed did not configure its peers:\n" + "".join(log[-30:]))
r = json.loads(follower)
print(f"| {n} × 4 | {topology} | {r['join_ms']:.0f} | {joined:.0f} | {peers} |")
PY
  done
done
