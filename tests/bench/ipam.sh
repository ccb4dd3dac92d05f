#!/usr/bin/env bash
# IPAM benchmark (issue: allocation/release throughput and latency, 1 and 8 workers, etcd and
# SQLite, beside the raw single-key compare-and-swap rate of the same etcd in the same run).
# Usage: tests/bench/ipam.sh [COUNT]   — prints a markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-2000}
for p in etcd etcdctl; do
  command -v "$p" >/dev/null || { echo "$p not installed (apt-get install etcd-server etcd-client)" >&2; exit 1; }
done
cargo build --release --quiet --bin routectl
R=target/release/routectl
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

run() { # store-url args...
  local url=$1; shift
  ROUTED_DATASTORE=$url "$R" "$@" -o json
}
results="$work/results.jsonl"
for url in "etcd://127.0.0.1:$port" "sqlite://$work/routed.db"; do
  run "$url" pool create bench --cidr 10.64.0.0/12 >/dev/null
  run "$url" ipam config --max-blocks-per-host 0 >/dev/null
  for workers in 1 8; do
    per=$((COUNT / workers))
    run "$url" bench cas --workers "$workers" --count "$per" >>"$results"
    run "$url" bench ipam --node "node-w$workers" --workers "$workers" --count "$per" \
      --handle-prefix "w$workers" >>"$results"
  done
  # Worst case: 8 allocators that share nothing (separate processes) racing on one node's blocks.
  if ! run "$url" bench ipam --node node-indep --workers 8 --count $((COUNT / 8)) --independent \
    --handle-prefix indep >>"$results.indep" 2>"$work/indep.err"; then
    echo "NOTE: $url: 8 independent allocators on one node: $(tail -1 "$work/indep.err")" >&2
  else
    cat "$results.indep" >>"$results"
  fi
  rm -f "$results.indep"
done

python3 - "$results" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]).read().replace("]\n[", "]\n\n[").split("\n\n"):
    if line.strip():
        rows += json.loads(line)
def kind(url): return "etcd" if url.startswith("etcd") else "sqlite"
cas = {(kind(r["datastore"]), r["workers"]): r["ops_per_second"] for r in rows if r["operation"] == "cas"}
print("| store | workers | operation | ops/s | p50 ms | p99 ms | round trips/op | vs raw CAS (same workers) |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    k = kind(r["datastore"])
    ratio = r["ops_per_second"] / cas[(k, r["workers"])] if (k, r["workers"]) in cas else 0
    op = r["operation"] + (" (independent)" if r.get("independent") else "")
    print(f'| {k} | {r["workers"]} | {op} | {r["ops_per_second"]:.0f} | {r["p50_ms"]:.2f} | '
          f'{r["p99_ms"]:.2f} | {r["round_trips_per_op"]:.2f} | {ratio:.2f} |')
PY
