#!/usr/bin/env bash
# Route-reflector scale (issue 14, item 1): the BGP peer simulator (`routectl bench bgp-peers`)
# brings N iBGP clients, each from its own address and each advertising 4 /26 blocks with itself
# as next hop, to one reflector, and times: all Established (from the simulator's start),
# convergence (every client holds every other client's blocks, from the last Established), a
# withdraw wave (client 0's blocks gone at every client) and the flap back; the reflector's peak
# RSS (VmHWM) and CPU (utime+stime over the run).
#
# Topology: namespace $NS-rr (the reflector, 10.99.0.1/16 on eth0) and namespace $NS-cl (the
# simulator, N addresses from 10.99.1.1 on the veth's other end). Reflectors, one after another,
# each in a fresh reflector namespace:
#   bird    BIRD 2: one passive protocol per client (`rr client`), as Calico configures BIRD.
#   routed  routed with its Node's rr_cluster_id set, the mesh off and one iBGP peer per client
#           (needs the route-reflection role, issue 13: `routectl node set --rr-cluster-id`).
#   gobgp   gobgpd with a dynamic neighbor group (route-reflector-client).
# Usage: tests/bench/rr_scale.sh [CLIENTS...]   default "100 1000 5000"
#   REFLECTORS="bird routed gobgp"  BLOCKS=4  TIMEOUT=300 (s per phase)  ROUTED_BIN_DIR=DIR (skip build)
#   ANNOUNCE_TOGETHER=1: clients announce only once all are Established (convergence = the
#   reflection alone, the same work for every reflector)
# Root; not run in CI. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(100 1000 5000)
REFLECTORS=${REFLECTORS:-bird routed gobgp}
BLOCKS=${BLOCKS:-4}
TIMEOUT=${TIMEOUT:-300}
bench_require "apt-get install bird2 jq iproute2" bird birdc ip jq
bench_bins routed routectl
bench_setup
NS=rrs$(($$ % 10000))
CL=$NS-cl

# The reflector resolves every client's address: past 1,024 neighbours (the default gc_thresh3,
# a host-wide setting) the table overflows and connections fail with "No route to host". Raised
# for the run (only ever raised), as for any host with thousands of BGP neighbours on one link.
raise_neigh() { # raise_neigh N
    local want=$(($1 * 2 + 1024)) key cur
    for key in gc_thresh1 gc_thresh2 gc_thresh3; do
        cur=$(sysctl -n "net.ipv4.neigh.default.$key")
        [ "$cur" -lt "$want" ] && sysctl -qw "net.ipv4.neigh.default.$key=$want"
        want=$((want * 2))
    done
    return 0
}

# A fresh pair of namespaces with N client addresses: 10.99.1.1 + i.
make_ns() { # make_ns RR N
    local rr=$1 n=$2
    raise_neigh "$n"
    ip netns add "$rr"; namespaces+=("$rr")
    ip netns add "$CL"; namespaces+=("$CL")
    ip -n "$rr" link set lo up
    ip -n "$CL" link set lo up
    ip -n "$rr" link add eth0 type veth peer name eth0 netns "$CL"
    ip -n "$rr" addr add 10.99.0.1/16 dev eth0
    python3 - "$n" >"$work/addrs" <<'PY'
import ipaddress, sys
first = int(ipaddress.IPv4Address("10.99.1.1"))
for i in range(int(sys.argv[1])):
    print(f"addr add {ipaddress.IPv4Address(first + i)}/16 dev eth0 noprefixroute")
PY
    ip -n "$CL" addr add 10.99.0.254/16 dev eth0
    ip -n "$CL" -batch "$work/addrs"
    ip -n "$rr" link set eth0 up
    ip -n "$CL" link set eth0 up
    for ns in "$rr" "$CL"; do
        ip netns exec "$ns" sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
    done
}

drop_ns() {
    local name
    for name in "$@"; do ip netns del "$name" 2>/dev/null || true; done
}

client_ip() { local x=$((10 * 16777216 + 99 * 65536 + 256 + 1 + $1)); echo "$((x >> 24)).$(((x >> 16) & 255)).$(((x >> 8) & 255)).$((x & 255))"; }

start_bird() { # start_bird RR N
    cat >"$work/bird.conf" <<CONF
router id 10.99.0.1;
protocol device { }
protocol direct { ipv4; interface "eth0"; }
template bgp rrc {
  local 10.99.0.1 as 64512; direct; passive on; rr client; rr cluster id 10.99.0.1; hold time 240;
  error wait time 1, 5;
  ipv4 { import all; export all; gateway direct; };
}
CONF
    # One protocol per client, as Calico's BIRD configuration has one per peer.
    local i
    for i in $(seq 0 $(($2 - 1))); do
        echo "protocol bgp c$i from rrc { neighbor $(client_ip "$i") internal; }"
    done >>"$work/bird.conf"
    ip netns exec "$1" bird -f -c "$work/bird.conf" -s "$work/bird.ctl" >"$work/bird.out" 2>&1 &
    pids+=($!)
    REFLECTOR_PID=$!
    until birdc -s "$work/bird.ctl" show status >/dev/null 2>&1; do
        kill -0 "$REFLECTOR_PID" 2>/dev/null || { cat "$work/bird.out" >&2; exit 1; }
        sleep 0.1
    done
}

start_gobgp() { # start_gobgp RR
    cat >"$work/gobgp.toml" <<CONF
[global.config]
  as = 64512
  router-id = "10.99.0.1"
[[peer-groups]]
  [peer-groups.config]
    peer-group-name = "clients"
    peer-as = 64512
  [peer-groups.route-reflector.config]
    route-reflector-client = true
    route-reflector-cluster-id = "10.99.0.1"
  [peer-groups.timers.config]
    hold-time = 240
[[dynamic-neighbors]]
  [dynamic-neighbors.config]
    prefix = "10.99.0.0/16"
    peer-group = "clients"
CONF
    ip netns exec "$1" gobgpd -f "$work/gobgp.toml" -p -l warn >"$work/gobgp.out" 2>&1 &
    pids+=($!)
    REFLECTOR_PID=$!
    until ip netns exec "$1" gobgp global >/dev/null 2>&1; do
        kill -0 "$REFLECTOR_PID" 2>/dev/null || { cat "$work/gobgp.out" >&2; exit 1; }
        sleep 0.1
    done
}

start_routed() { # start_routed RR N
    local ds="sqlite://$work/routed-$2.db" i
    "$B/routectl" --datastore "$ds" config set --mesh off >/dev/null
    for i in $(seq 0 $(($2 - 1))); do
        echo "peer create c$i --as 64512 --peer-ip $(client_ip "$i")"
    done >"$work/peers"
    # One routectl per peer: slow at 5,000 (~20 ms each), but outside the timed part.
    while read -r line; do
        # shellcheck disable=SC2086
        "$B/routectl" --datastore "$ds" $line >/dev/null
    done <"$work/peers"
    ip netns exec "$1" "$B/routed" --node-name rr --datastore "$ds" --ip 10.99.0.1/16 \
        --socket "$work/routed.sock" --no-forward-rules >"$work/routed-$2.log" 2>&1 &
    pids+=($!)
    REFLECTOR_PID=$!
    until "$B/routectl" --datastore "$ds" node list -o json 2>/dev/null | jq -e '.[] | select(.name == "rr")' >/dev/null; do
        sleep 0.2
    done
    "$B/routectl" --datastore "$ds" node set rr --rr-cluster-id 10.99.0.1 >/dev/null
    until [ "$("$B/routectl" status --socket "$work/routed.sock" -o json 2>/dev/null | jq length)" = "$2" ]; do
        sleep 0.2
    done
}

echo "| reflector | clients × blocks | all Established (s) | converged after (s) | withdraw wave (s) | flap back (s) | reflector peak RSS (MB) | reflector CPU (s) |"
echo "|---|---|---|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
    for r in $REFLECTORS; do
        RR=$NS-$r
        make_ns "$RR" "$n"
        log "$r: $n clients"
        case $r in
        bird) start_bird "$RR" "$n" ;;
        gobgp) command -v gobgpd >/dev/null || { log "gobgpd missing"; drop_ns "$RR" "$CL"; continue; }; start_gobgp "$RR" ;;
        routed) start_routed "$RR" "$n" ;;
        esac
        if out=$(ip netns exec "$CL" "$B/routectl" bench bgp-peers --reflector 10.99.0.1 \
            --first-client 10.99.1.1 --clients "$n" --blocks "$BLOCKS" --timeout "$TIMEOUT" \
            --reflector-pid "$REFLECTOR_PID" ${ANNOUNCE_TOGETHER:+--announce-together} \
            -o json 2>"$work/sim.err"); then
            echo "$out" | jq -r --arg r "$r" '"| \($r) | \(.clients) × \(.blocks) | \(.established_s * 100 | round / 100) | \(.converged_s * 100 | round / 100) | \(.withdraw_s * 1000 | round / 1000) | \(.flap_s * 1000 | round / 1000) | \(.reflector_peak_rss_mb // 0 | round) | \(.reflector_cpu_s // 0 | . * 100 | round / 100) |"'
        else
            echo "| $r | $n × $BLOCKS | failed: $(tail -1 "$work/sim.err") | | | | | |"
        fi
        kill "$REFLECTOR_PID" 2>/dev/null || true
        wait "$REFLECTOR_PID" 2>/dev/null || true
        drop_ns "$RR" "$CL"
    done
done
