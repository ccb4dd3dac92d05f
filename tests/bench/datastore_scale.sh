#!/usr/bin/env bash
# Datastore at scale (issue 14, item 4): one agent's follower in a cluster of N synthetic Nodes
# with 4 block affinities each, on a real etcd: the datastore reads and CPU per 100 changes
# elsewhere in the cluster, the cluster states it rebuilt for them (and the records copied), and
# the time (and reads) for the agent to join. Each size twice: Calico's large-cluster topology
# (mesh off, two reflectors peered by selector) and the default full mesh.
# Usage: tests/bench/datastore_scale.sh [NODES...]   (default: 1000 5000)
# PROFILE=debug uses the debug build (default release). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${*:-1000 5000}
PROFILE=${PROFILE:-release}
for p in etcd etcdctl; do
  command -v "$p" >/dev/null || { echo "$p not installed (apt-get install etcd-server etcd-client)" >&2; exit 1; }
done
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
for _ in $(seq 300); do # at most 30 s
  etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done
etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1 ||
  { echo "etcd did not answer within 30 s (see $work/etcd.log)" >&2; exit 1; }

echo "| nodes × blocks | topology | join (ms) | join reads | calc on the first state (ms) | reads per change | states built per 100 changes | records copied per change | process CPU per 100 changes (ms) | follower busy per 100 changes (ms) | re-lists |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for n in $SIZES; do
  for topology in reflectors mesh; do
    flag=""; [ "$topology" = mesh ] && flag="--mesh"
    # Each size and topology in its own key prefix: the runs do not see each other's records.
    out=$(ROUTED_DATASTORE="etcd://127.0.0.1:$port" ROUTED_DATASTORE_PREFIX="/bench-$n-$topology/" \
      "$R" bench follower --nodes "$n" --blocks 4 --changes 100 $flag -o json)
    python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
per100 = 100 / max(r['changes'], 1)
print(f"| {r['nodes']} × {r['blocks_per_node']} | {r['topology']} | {r['join_ms']:.0f} | {r['join_reads']} | "
      f"{r['join_calc_ms']:.1f} | {r['reads_per_change']:.2f} | {r['states_built'] * per100:.0f} | "
      f"{r['records_per_change']:.0f} | {r['cpu_ms_per_100']:.0f} | {r['follower_ms_per_100']:.1f} | {r['relists']} |")
PY
  done
done
