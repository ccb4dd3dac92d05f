#!/usr/bin/env bash
# Datastore at scale (issue 14, item 4): one agent's follower in a cluster of N synthetic Nodes
# with 4 block affinities each, on a real etcd: the datastore reads and CPU per 100 changes
# elsewhere in the cluster, and the time (and reads) for the agent to join.
# Usage: tests/bench/datastore_scale.sh [NODES...]   (default: 1000 5000)
# PROFILE=debug uses the debug build (default release). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${*:-1000 5000}
PROFILE=${PROFILE:-release}
command -v etcd >/dev/null || { echo "etcd not installed (apt-get install etcd-server)" >&2; exit 1; }
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin routectl
else
  cargo build --quiet --bin routectl
fi
R=target/$PROFILE/routectl
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000)); peer=$((port + 1))
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "bench=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null; wait $etcd_pid 2>/dev/null; rm -rf "$work"' EXIT
until etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1; do sleep 0.1; done

echo "| nodes × blocks | join (ms) | join reads | reads per change | process CPU per 100 changes (ms) | follower busy per 100 changes (ms) | re-lists |"
echo "|---|---|---|---|---|---|---|"
for n in $SIZES; do
  # Each size in its own key prefix: the sizes do not see each other's records.
  out=$(ROUTED_DATASTORE="etcd://127.0.0.1:$port" ROUTED_DATASTORE_PREFIX="/bench-$n/" \
    "$R" bench follower --nodes "$n" --blocks 4 --changes 100 -o json)
  python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"| {r['nodes']} × {r['blocks_per_node']} | {r['join_ms']:.0f} | {r['join_reads']} | "
      f"{r['reads_per_change']:.2f} | {r['cpu_ms_per_100']:.0f} | {r['follower_ms_per_100']:.1f} | {r['relists']} |")
PY
done
