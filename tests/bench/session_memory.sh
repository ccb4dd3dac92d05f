#!/usr/bin/env bash
# Memory of idle BGP sessions (issue 14, item 5): a speaker's RSS with N idle Established
# sessions and with N+K, so the cost of one session is (RSS(N+K) - RSS(N)) / K; routed beside
# BIRD 2 in the same run.
#
# Topology: namespace $NS-t (the target, 10.97.0.1/24 on eth0) and $NS-p (the peers: N+K
# addresses from 10.97.16.1 on the veth's other end, 10.97.0.254/24 the target's gateway to
# them: one neighbour entry each side, as the host's ARP table is shared by every namespace
# and other benchmarks may fill it). The peers are the BGP peer simulator
# (`routectl bench bgp-peers --idle`: iBGP, AS 64512, no routes, keepalives only), started twice:
# N clients, then K more from the next addresses. Every one of the N+K peers is configured in
# the target from the start, so the difference is what an Established session costs over a
# configured one. Targets, one after another, each in a fresh pair of namespaces:
#   routed  target/release/routed, embedded SQLite store, mesh off, one iBGP peer per client
#           (it also dials each peer; the peers' namespace drops those SYNs, so its sessions
#           wait in Connect and adopt the simulator's connections).
#   bird    BIRD 2, one passive iBGP protocol per client (`import all; export none`).
# RSS = VmRSS from /proc/PID/status, read once the target reports the sessions Established and
# again after SETTLE seconds (the larger of the two is taken); "configured" = no session up.
# Usage: tests/bench/session_memory.sh [N [K]]   default 100 400
#   TARGETS="routed bird"  SETTLE=3 (s)  TIMEOUT=300 (s)  ROUTED_BIN_DIR=DIR (skip the build)
# Root; not run in CI. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
N=${1:-100}
K=${2:-400}
TARGETS=${TARGETS:-routed bird}
SETTLE=${SETTLE:-3}
TIMEOUT=${TIMEOUT:-300}
bench_require "apt-get install bird2 jq iproute2" bird birdc ip jq nft
bench_bins routed routectl
bench_setup
NS=rsm$(($$ % 10000))
PEERS=$NS-p
TOTAL=$((N + K))
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
client_ip() { local x=$((10 * 16777216 + 97 * 65536 + 16 * 256 + 1 + $1)); echo "$((x >> 24)).$(((x >> 16) & 255)).$(((x >> 8) & 255)).$((x & 255))"; }

make_ns() { # make_ns TARGET_NS
    local t=$1 i
    ip netns add "$t"; namespaces+=("$t")
    ip netns add "$PEERS"; namespaces+=("$PEERS")
    ip -n "$t" link set lo up
    ip -n "$PEERS" link set lo up
    ip -n "$t" link add eth0 type veth peer name eth0 netns "$PEERS"
    ip -n "$t" addr add 10.97.0.1/24 dev eth0
    for i in $(seq 0 $((TOTAL - 1))); do
        echo "addr add $(client_ip "$i")/32 dev eth0"
    done >"$work/addrs"
    ip -n "$PEERS" addr add 10.97.0.254/24 dev eth0
    ip -n "$PEERS" -batch "$work/addrs"
    ip -n "$t" link set eth0 up
    ip -n "$PEERS" link set eth0 up
    ip -n "$t" route add 10.97.16.0/20 via 10.97.0.254
    # The target's own dials to the peers get no answer (not a reset): its sessions wait in
    # Connect, where an incoming connection is adopted, instead of backing off after a refusal.
    ip netns exec "$PEERS" nft -f - <<'NFT'
table inet session_memory {
    chain input { type filter hook input priority 0; tcp dport 179 drop; }
}
NFT
    for n in "$t" "$PEERS"; do
        ip netns exec "$n" sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
    done
}

drop_ns() {
    local name
    for name in "$@"; do ip netns del "$name" 2>/dev/null || true; done
}

# Sessions the target reports Established.
established() { # established TARGET
    case $1 in
    routed) "$B/routectl" status --socket "$work/routed.sock" -o json 2>/dev/null |
        jq '[.[] | select(.state == "Established")] | length' 2>/dev/null || echo 0 ;;
    bird) birdc -s "$work/bird.ctl" show protocols 2>/dev/null | grep -c Established || true ;;
    esac
}

wait_established() { # wait_established TARGET COUNT
    local deadline=$((SECONDS + TIMEOUT)) got
    while :; do
        got=$(established "$1")
        [ "${got:-0}" -ge "$2" ] && return 0
        kill -0 "$TARGET_PID" 2>/dev/null || { echo "$1 died; see $work" >&2; KEEP=1; exit 1; }
        [ $SECONDS -ge $deadline ] && { echo "$1: $got of $2 Established after ${TIMEOUT} s" >&2; KEEP=1; exit 1; }
        sleep 0.2
    done
}

# RSS once the count is reached and again after SETTLE s (sessions exchange keepalives and
# buffers settle); the larger.
settled_rss_kb() {
    local a b
    a=$(rss_kb "$TARGET_PID")
    sleep "$SETTLE"
    b=$(rss_kb "$TARGET_PID")
    echo $((a > b ? a : b))
}

start_routed() { # start_routed NS
    local ds="sqlite://$work/routed.db" i
    rm -f "$work/routed.db"*
    "$B/routectl" --datastore "$ds" config set --mesh off >/dev/null
    for i in $(seq 0 $((TOTAL - 1))); do
        "$B/routectl" --datastore "$ds" peer create "c$i" --as 64512 --peer-ip "$(client_ip "$i")" >/dev/null
    done
    ip netns exec "$1" "$B/routed" --node-name sm --datastore "$ds" --ip 10.97.0.1/24 \
        --socket "$work/routed.sock" --no-forward-rules >"$work/routed.log" 2>&1 &
    pids+=($!)
    TARGET_PID=$!
    until [ "$("$B/routectl" status --socket "$work/routed.sock" -o json 2>/dev/null | jq length 2>/dev/null)" = "$TOTAL" ]; do
        kill -0 "$TARGET_PID" 2>/dev/null || { cat "$work/routed.log" >&2; exit 1; }
        sleep 0.2
    done
}

start_bird() { # start_bird NS
    local i
    {
        echo "router id 10.97.0.1;"
        echo "protocol device { }"
        echo "template bgp smpeer { local 10.97.0.1 as 64512; multihop; passive on; hold time 240;"
        echo "  ipv4 { import all; export none; }; }"
        for i in $(seq 0 $((TOTAL - 1))); do
            echo "protocol bgp c$i from smpeer { neighbor $(client_ip "$i") internal; }"
        done
    } >"$work/bird.conf"
    ip netns exec "$1" bird -f -c "$work/bird.conf" -s "$work/bird.ctl" >"$work/bird.out" 2>&1 &
    pids+=($!)
    TARGET_PID=$!
    until birdc -s "$work/bird.ctl" show status >/dev/null 2>&1; do
        kill -0 "$TARGET_PID" 2>/dev/null || { cat "$work/bird.out" >&2; exit 1; }
        sleep 0.1
    done
}

start_peers() { # start_peers FIRST COUNT -> pid in SIM_PID
    ip netns exec "$PEERS" "$B/routectl" bench bgp-peers --reflector 10.97.0.1 \
        --first-client "$(client_ip "$1")" --clients "$2" --blocks 0 --idle 3600 \
        --timeout "$TIMEOUT" >"$work/sim-$1.out" 2>&1 &
    pids+=($!)
    SIM_PID=$!
}

stop() { # stop PID...
    local pid
    for pid in "$@"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

: >"$work/results"
for t in $TARGETS; do
    TNS=$NS-$t
    make_ns "$TNS"
    log "$t: $TOTAL peers configured"
    case $t in
    routed) start_routed "$TNS" ;;
    bird) start_bird "$TNS" ;;
    esac
    sleep "$SETTLE"
    base=$(rss_kb "$TARGET_PID")
    start_peers 0 "$N"
    first=$SIM_PID
    wait_established "$t" "$N"
    log "$t: $N Established"
    at_n=$(settled_rss_kb)
    start_peers "$N" "$K"
    second=$SIM_PID
    wait_established "$t" "$TOTAL"
    log "$t: $TOTAL Established"
    at_total=$(settled_rss_kb)
    echo "$t $base $at_n $at_total" >>"$work/results"
    stop "$first" "$second" "$TARGET_PID"
    drop_ns "$TNS" "$PEERS"
done

echo
echo "Run of $(date -u +%F), $(nproc) vCPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); N = $N, K = $K"
echo "idle iBGP sessions (no routes), $TOTAL peers configured in each target."
echo
echo "| target | RSS, $TOTAL configured, none up (MB) | RSS, $N Established (MB) | RSS, $TOTAL Established (MB) | per session, N → N+K (KB) | per session, 0 → N (KB) |"
echo "|---|---|---|---|---|---|"
while read -r t base at_n at_total; do
    awk -v t="$t" -v b="$base" -v n1="$at_n" -v n2="$at_total" -v n="$N" -v k="$K" 'BEGIN {
        printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", t, b / 1024, n1 / 1024, n2 / 1024, (n2 - n1) / k, (n1 - b) / n }'
done <"$work/results"
r=$(awk '$1 == "routed"' "$work/results")
x=$(awk '$1 == "bird"' "$work/results")
if [ -n "$r" ] && [ -n "$x" ]; then
    awk -v r="$r" -v x="$x" -v k="$K" 'BEGIN { split(r, a, " "); split(x, b, " ");
        d = (b[4] - b[3]);
        printf "\nrouted / BIRD per session (N → N+K): %s\n", d > 0 ? sprintf("%.2f", (a[4] - a[3]) / d) : "-" }'
fi
