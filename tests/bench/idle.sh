#!/usr/bin/env bash
# Idle CPU and memory of the node agent: brings up the lab (examples/lab.sh: three routed agents,
# BIRD 2 as the ToR peering with each), leaves it idle, and reads utime+stime and VmRSS of each
# agent and of the ToR's BIRD from /proc over SECONDS; once with the embedded SQLite store and once
# with etcd. The ToR's BIRD (four BGP sessions, a kernel protocol) is the reference in the same run.
# A third run (sqlite+obs) starts the agents with both BIRD-compatible sockets and --metrics-listen
# (ROUTED_LAB_OBSERVABILITY=1) and scrapes each /metrics and `show protocols all` every 15 s, as a
# Prometheus and a bird_exporter would.
# Usage: tests/bench/idle.sh [SECONDS]   (default 60)   ROUTED_BIN_DIR=DIR skips the build.
# Root; not run in CI. Uses its own lab directory and namespace prefix.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_IDLE=${1:-60}
export ROUTED_LAB_DIR=/tmp/routed-idle-bench ROUTED_LAB_NAME=ridle
if [ -z "${ROUTED_BIN_DIR:-}" ]; then
    cargo build --release --quiet --bin routed --bin routectl --bin routed-cni
    export ROUTED_BIN_DIR=$PWD/target/release
fi
HZ=$(getconf CLK_TCK)
trap 'examples/lab.sh down >/dev/null 2>&1 || true' EXIT
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
echo "| store | process | CPU over ${SECONDS_IDLE} s (% of a core) | RSS (MB) |"
echo "|---|---|---|---|"
for store in sqlite etcd sqlite+obs; do
    opts=()
    [ "$store" = etcd ] && opts=(--etcd)
    export ROUTED_LAB_OBSERVABILITY=0
    [ "$store" = sqlite+obs ] && export ROUTED_LAB_OBSERVABILITY=1
    examples/lab.sh up "${opts[@]}" >/dev/null
    sleep 5
    mapfile -t pids < <(while read -r pid; do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        case "$comm" in routed | bird) echo "$pid $comm" ;; esac
    done <"$ROUTED_LAB_DIR/pids")
    declare -A before=()
    for entry in "${pids[@]}"; do before[${entry% *}]=$(ticks "${entry% *}"); done
    scraper=""
    if [ "$store" = sqlite+obs ]; then
        (while true; do
            for sock in "$ROUTED_LAB_DIR"/node-*-bird.ctl; do
                birdc -s "$sock" show protocols all >/dev/null 2>&1 || true
            done
            for ns in $(ip netns list | awk '/^ridle/ { print $1 }'); do
                ip netns exec "$ns" sh -c 'for a in $(ip -4 -o addr show dev eth0 | awk "{ print \$4 }"); do curl -sf "http://${a%/*}:9099/metrics" >/dev/null; done' 2>/dev/null || true
            done
            sleep 15
        done) &
        scraper=$!
    fi
    sleep "$SECONDS_IDLE"
    [ -n "$scraper" ] && kill "$scraper"
    for entry in "${pids[@]}"; do
        pid=${entry% *}
        used=$(( $(ticks "$pid") - ${before[$pid]} ))
        pct=$(awk -v t="$used" -v hz="$HZ" -v s="$SECONDS_IDLE" 'BEGIN { printf "%.2f", 100 * t / hz / s }')
        echo "| $store | ${entry#* } (pid $pid) | $pct | $(rss_mb "$pid") |"
    done
    unset before
    examples/lab.sh down >/dev/null
done
