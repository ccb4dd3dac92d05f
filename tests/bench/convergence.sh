#!/usr/bin/env bash
# Convergence: from the return of the CNI ADD that gave a node its first block to that block's
# route being in every other node's kernel. Three nodes on one rack bridge, in network namespaces,
# two variants measured in the same run:
#   routed  routed's own BGP speaker (full iBGP mesh) advertises the block and installs learned routes;
#   bird    BIRD 2 on every node configured as Calico configures it (kernel protocol `learn; scan time
#           2; merge paths on`, iBGP full mesh, graceful restart, connect delay 2): it learns the block's
#           blackhole route from the kernel (routed installs it, proto 231, with routed's own BGP off:
#           mesh off, no peers) and propagates it; the peers' BIRDs install it.
# A route that is already there when the ADD returns counts as 0 ms.
# Each trial: ADD a pod on node (k mod 3) + 1 (its first block), take the time, wait for the block's
# route in the other two kernels (timestamps from `ip -ts monitor route`, started before the trials),
# then DEL the pod, give the empty block back and wait for the route to go, so the next trial again
# claims a first block.
# Usage: tests/bench/convergence.sh [TRIALS]   (root; default 50; prints a markdown table)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
TRIALS=${1:-50}
bench_require "apt-get install bird2 jq iproute2" bird birdc jq ip
bench_bins routed routed-cni routectl
bench_setup
tag=$$
P=rcv$((tag % 10000))
RACK=10.79.0

setup_cluster() { # setup_cluster VARIANT
    local v=$1
    DS="sqlite://$work/$v.db"
    add_ns "$P-$v-rack"
    ns "$P-$v-rack" ip link add br0 type bridge
    ns "$P-$v-rack" ip addr add "$RACK.254/24" dev br0
    ns "$P-$v-rack" ip link set br0 up
    "$B/routectl" --datastore "$DS" pool create bench --cidr 10.245.0.0/16 >/dev/null
    if [ "$v" = bird ]; then
        "$B/routectl" --datastore "$DS" config set --mesh off --listen-port 1179 >/dev/null
    fi
    for i in 1 2 3; do
        local n=$P-$v-n$i
        add_ns "$n"
        ip -n "$n" link add eth0 type veth peer name "n$i" netns "$P-$v-rack"
        ns "$P-$v-rack" ip link set "n$i" master br0 up
        ip -n "$n" addr add "$RACK.$i/24" dev eth0
        ip -n "$n" link set eth0 up
        ip -n "$n" route add default via "$RACK.254"
        ip netns exec "$n" "$B/routed" --node-name "node-$i" --datastore "$DS" --ip "$RACK.$i/24" \
            --socket "$work/$v-$i.sock" >"$work/$v-$i.log" 2>&1 &
        pids+=($!)
        if [ "$v" = bird ]; then
            {
                echo "router id $RACK.$i;"
                echo "protocol device { scan time 2; }"
                echo "protocol kernel { learn; scan time 2; merge paths on; graceful restart;"
                echo "  ipv4 { import where krt_source = 231; export where source = RTS_BGP; }; }"
                echo "template bgp mesh { local $RACK.$i as 64512; graceful restart; connect delay time 2;"
                echo "  connect retry time 5; error wait time 5, 30;"
                echo "  ipv4 { import all; export where proto = \"kernel1\"; next hop self; add paths on; }; }"
                for j in 1 2 3; do
                    [ "$i" = "$j" ] && continue
                    echo "protocol bgp Mesh_10_79_0_$j from mesh { neighbor $RACK.$j as 64512;"
                    [ "$i" -gt "$j" ] && echo "  passive on;"
                    echo "}"
                done
            } >"$work/bird-$i.conf"
            ip netns exec "$n" bird -f -c "$work/bird-$i.conf" -s "$work/bird-$i.ctl" >"$work/birdd-$i.out" 2>&1 &
            pids+=($!)
        fi
        # Route events with microsecond timestamps, from before the first trial.
        ip -n "$n" -ts monitor route >"$work/$v-mon-$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        until curl -sf --unix-socket "$work/$v-$i.sock" http://r/readyz >/dev/null 2>&1; do sleep 0.1; done
    done
    # Sessions up everywhere before the first trial.
    local deadline=$((SECONDS + 60))
    while :; do
        local up=0
        for i in 1 2 3; do
            if [ "$v" = bird ]; then
                up=$((up + $(birdc -s "$work/bird-$i.ctl" show protocols 2>/dev/null | grep -c Established || true)))
            else
                up=$((up + $("$B/routectl" status --socket "$work/$v-$i.sock" -o json | jq '[.[] | select(.state == "Established")] | length')))
            fi
        done
        [ "$up" -ge 6 ] && break
        [ $SECONDS -ge $deadline ] && { echo "$v: sessions did not come up" >&2; exit 1; }
        sleep 0.2
    done
}



run_trials() { # run_trials VARIANT -> one latency (ms) per line in $work/VARIANT.ms
    local v=$1
    : >"$work/$v.ms"
    : >"$work/$v.start.ms"
    for k in $(seq 1 "$TRIALS"); do
        local i=$(((k % 3) + 1))
        local pod=$P-$v-p$k
        add_ns "$pod"
        local conf="{\"cniVersion\":\"1.0.0\",\"name\":\"b\",\"type\":\"routed-cni\",\"socket\":\"$work/$v-$i.sock\"}"
        local out
        local tstart
        tstart=$(now)
        out=$(echo "$conf" | ns "$P-$v-n$i" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND=ADD \
            CNI_CONTAINERID="c$k" CNI_NETNS="/var/run/netns/$pod" CNI_IFNAME=eth0 "$B/routed-cni")
        local t0
        t0=$(now)
        local ip block
        ip=$(jq -r '.ips[0].address' <<<"$out" | cut -d/ -f1)
        block=$(block_of "$ip")
        record_reach "$v" "$k" "$block" "$tstart" "$t0" "$i" 1 2 3
        # Undo: the pod goes, its block is given back, the route leaves the other kernels.
        echo "$conf" | ns "$P-$v-n$i" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND=DEL \
            CNI_CONTAINERID="c$k" CNI_NETNS="/var/run/netns/$pod" CNI_IFNAME=eth0 "$B/routed-cni" >/dev/null
        ip netns del "$pod"
        "$B/routectl" --datastore "sqlite://$work/$v.db" ipam release --empty-blocks --node "node-$i" >/dev/null
        wait_withdrawn "$v" "$k" "$block" "$i" 1 2 3
    done
}


for v in routed bird; do
    echo "==> $v: cluster up" >&2
    setup_cluster "$v"
    echo "==> $v: $TRIALS trials" >&2
    run_trials "$v"
done
echo
echo "Convergence of a node's first block to the other two nodes' kernels, $TRIALS trials each ($(date -u +%F))"
echo
echo "| speaker, measured from | p50 ms | p99 ms | mean ms | max ms |"
echo "|---|---|---|---|---|"
row "routed, ADD return" "$work/routed.ms"
row "BIRD 2 as Calico runs it, ADD return" "$work/bird.ms"
row "routed, ADD start" "$work/routed.start.ms"
row "BIRD 2 as Calico runs it, ADD start" "$work/bird.start.ms"
