#!/usr/bin/env bash
# Route-reflection convergence: from the return of the CNI ADD that gave a client node its first
# block to that block's route being in every other client's kernel, through one route reflector.
# Three routed clients (node-2..4, mesh off) on one rack bridge, in network namespaces; two
# variants measured in the same run, only the reflector differs:
#   routed  node-1 is a routed node made a reflector the Calico way (label route-reflector=true,
#           cluster ID 1.0.0.1, one peer --node-selector 'all()' --peer-selector "route-reflector
#           == 'true'");
#   bird    BIRD 2 in its own namespace on the rack (10.80.0.250, `rr client; rr cluster id
#           1.0.0.1;` per client, next hop kept), the clients' one global peer.
# A route that is already there when the ADD returns counts as 0 ms; the ADD-start rows measure
# from when the ADD began (the ADD itself included).
# Each trial: ADD a pod on client (k mod 3) + 2 (its first block), take the time, wait for the
# block's route in the other two clients' kernels (timestamps from `ip -ts monitor route`, started
# before the trials), then DEL the pod, give the empty block back and wait for the route to go.
# Usage: tests/bench/rr_convergence.sh [TRIALS]   (root; default 50; prints a markdown table)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
TRIALS=${1:-50}
bench_require "apt-get install bird2 jq iproute2 curl" bird birdc jq ip curl
bench_bins routed routed-cni routectl
bench_setup
tag=$$
P=rrc$((tag % 10000))
RACK=10.80.0
RR_IP=$RACK.250
CLIENTS="2 3 4"

rack_member() { # rack_member VARIANT NAME ADDRESS
    local n=$P-$1-$2
    add_ns "$n"
    ip -n "$n" link add eth0 type veth peer name "$2" netns "$P-$1-rack"
    ns "$P-$1-rack" ip link set "$2" master br0 up
    ip -n "$n" addr add "$3/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" route add default via "$RACK.254"
}

start_agent() { # start_agent VARIANT I
    local v=$1 i=$2
    ip netns exec "$P-$v-n$i" "$B/routed" --node-name "node-$i" --datastore "$DS" --ip "$RACK.$i/24" \
        --socket "$work/$v-$i.sock" >"$work/$v-$i.log" 2>&1 &
    pids+=($!)
}

start_bird_reflector() {
    {
        echo "router id $RR_IP;"
        echo "protocol device {}"
        echo "template bgp clients { local $RR_IP as 64512; rr client; rr cluster id 1.0.0.1; direct;"
        echo "  connect retry time 1; ipv4 { import all; export all; }; }"
        for i in $CLIENTS; do echo "protocol bgp client_$i from clients { neighbor $RACK.$i as 64512; }"; done
    } >"$work/bird-rr.conf"
    ip netns exec "$P-bird-rr" bird -f -c "$work/bird-rr.conf" -s "$work/bird-rr.ctl" >"$work/bird-rr.out" 2>&1 &
    pids+=($!)
}

setup_cluster() { # setup_cluster VARIANT
    local v=$1
    DS="sqlite://$work/$v.db"
    add_ns "$P-$v-rack"
    ns "$P-$v-rack" ip link add br0 type bridge
    ns "$P-$v-rack" ip addr add "$RACK.254/24" dev br0
    ns "$P-$v-rack" ip link set br0 up
    R() { "$B/routectl" --datastore "$DS" "$@" >/dev/null; }
    R pool create bench --cidr 10.246.0.0/16
    R config set --mesh off
    if [ "$v" = routed ]; then
        R peer create to-rr --as 64512 --node-selector 'all()' --peer-selector "route-reflector == 'true'"
        rack_member "$v" n1 "$RACK.1"
        start_agent "$v" 1
    else
        R peer create rr --peer-ip "$RR_IP" --as 64512
        rack_member "$v" rr "$RR_IP"
        start_bird_reflector
    fi
    for i in $CLIENTS; do
        rack_member "$v" "n$i" "$RACK.$i"
        start_agent "$v" "$i"
        # Route events with microsecond timestamps, from before the first trial.
        ip -n "$P-$v-n$i" -ts monitor route >"$work/$v-mon-$i.log" 2>&1 &
        pids+=($!)
    done
    local nodes=$CLIENTS
    [ "$v" = routed ] && nodes="1 $CLIENTS"
    for i in $nodes; do
        until curl -sf --unix-socket "$work/$v-$i.sock" http://r/readyz >/dev/null 2>&1; do sleep 0.1; done
    done
    if [ "$v" = routed ]; then
        R node label node-1 route-reflector=true
        R node set node-1 --rr-cluster-id 1.0.0.1
    fi
    # Every client's session to the reflector up before the first trial.
    local deadline=$((SECONDS + 60))
    while :; do
        local up=0
        for i in $CLIENTS; do
            up=$((up + $("$B/routectl" status --socket "$work/$v-$i.sock" -o json | jq '[.[] | select(.state == "Established")] | length')))
        done
        [ "$up" -ge 3 ] && break
        [ $SECONDS -ge $deadline ] && { echo "$v: sessions did not come up" >&2; exit 1; }
        sleep 0.2
    done
}



cni() { # cni COMMAND VARIANT NODE K
    local conf="{\"cniVersion\":\"1.0.0\",\"name\":\"b\",\"type\":\"routed-cni\",\"socket\":\"$work/$2-$3.sock\"}"
    echo "$conf" | ns "$P-$2-n$3" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$1" \
        CNI_CONTAINERID="c$4" CNI_NETNS="/var/run/netns/$P-$2-p$4" CNI_IFNAME=eth0 "$B/routed-cni"
}

run_trials() { # run_trials VARIANT -> one latency (ms) per line in $work/VARIANT.ms
    local v=$1
    : >"$work/$v.ms"
    : >"$work/$v.start.ms"
    for k in $(seq 1 "$TRIALS"); do
        local i=$(((k % 3) + 2))
        add_ns "$P-$v-p$k"
        local out tstart t0 ip block
        tstart=$(now)
        out=$(cni ADD "$v" "$i" "$k")
        t0=$(now)
        ip=$(jq -r '.ips[0].address' <<<"$out" | cut -d/ -f1)
        block=$(block_of "$ip")
        record_reach "$v" "$k" "$block" "$tstart" "$t0" "$i" $CLIENTS
        # Undo: the pod goes, its block is given back, the route leaves the other kernels.
        cni DEL "$v" "$i" "$k" >/dev/null
        ip netns del "$P-$v-p$k"
        "$B/routectl" --datastore "sqlite://$work/$v.db" ipam release --empty-blocks --node "node-$i" >/dev/null
        wait_withdrawn "$v" "$k" "$block" "$i" $CLIENTS
    done
}


for v in routed bird; do
    echo "==> $v reflector: cluster up" >&2
    setup_cluster "$v"
    echo "==> $v reflector: $TRIALS trials" >&2
    run_trials "$v"
done
echo
echo "A client's new block reaching the other clients' kernels through one reflector, $TRIALS trials each ($(date -u +%F))"
echo
echo "| reflector, measured from | p50 ms | p99 ms | mean ms | max ms |"
echo "|---|---|---|---|---|"
row "routed (Calico recipe), ADD return" "$work/routed.ms"
row "BIRD 2 (rr client, next hop keep), ADD return" "$work/bird.ms"
row "routed (Calico recipe), ADD start" "$work/routed.start.ms"
row "BIRD 2 (rr client, next hop keep), ADD start" "$work/bird.start.ms"
