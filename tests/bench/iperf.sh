#!/usr/bin/env bash
# Pod-to-pod TCP throughput (iperf3), the way shared/seeds/003 measures it, all in one run:
#   ceiling      a raw veth pair between two namespaces (nothing else in the path)
#   same node    pod -> pod on one node (veth -> host routing -> veth)
#   plain        pod -> pod across nodes on one subnet, plain route (VXLAN CrossSubnet, same subnet)
#   vxlan        pod -> pod across subnets through vxlan.routed and a forwarding router
# The lab is tests/vxlan.rs's: node-1 and node-2 on subnet A, node-3 on subnet B, a router
# namespace joining the two, a BGP mesh, one pool with vxlan_mode CrossSubnet. Agents run with
# --no-forward-rules, so no netfilter rule of routed's sits in the path: what is measured is
# routing plus the encapsulation. The agents are the debug build (they are not in the data path).
# Usage: [ROUNDS=3] tests/bench/iperf.sh [SECONDS]   (root; prints a markdown table for docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-5}
command -v iperf3 >/dev/null || { echo "missing iperf3 (apt-get install iperf3)" >&2; exit 1; }
cargo build --quiet --bin routed --bin routed-cni --bin routectl
B=$PWD/target/debug
work=$(mktemp -d)
tag=$(printf '%x' $$)
nses=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${nses[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkns() { ip netns add "$1"; ip -n "$1" link set lo up; nses+=("$1"); }
DS="sqlite://$work/routed.db"

# Ceiling: a veth pair, nothing else.
mkns "rtp-ca-$tag"; mkns "rtp-cb-$tag"
ip -n "rtp-ca-$tag" link add eth0 type veth peer name eth0 netns "rtp-cb-$tag"
ip -n "rtp-ca-$tag" addr add 10.99.0.1/24 dev eth0; ip -n "rtp-ca-$tag" link set eth0 up
ip -n "rtp-cb-$tag" addr add 10.99.0.2/24 dev eth0; ip -n "rtp-cb-$tag" link set eth0 up

# The lab.
"$B/routectl" --datastore "$DS" pool create bench --cidr 10.92.0.0/16 --vxlan-mode CrossSubnet >/dev/null
rtr="rtp-r-$tag"; mkns "$rtr"
ip netns exec "$rtr" sysctl -qw net.ipv4.ip_forward=1
for br in A:10.110.1.254/24 B:10.110.2.254/24; do
  ip -n "$rtr" link add "br${br%%:*}" type bridge
  ip -n "$rtr" addr add "${br#*:}" dev "br${br%%:*}"; ip -n "$rtr" link set "br${br%%:*}" up
done
node_ip=(10.110.1.1 10.110.1.2 10.110.2.3)
for i in 0 1 2; do
  n="rtp-n$i-$tag"; mkns "$n"
  if [ "$i" -lt 2 ]; then br=brA; gw=10.110.1.254; else br=brB; gw=10.110.2.254; fi
  ip -n "$n" link add eth0 type veth peer name "p$i" netns "$rtr"
  ip -n "$rtr" link set "p$i" master "$br" up
  ip -n "$n" addr add "${node_ip[$i]}/24" dev eth0; ip -n "$n" link set eth0 up
  ip -n "$n" route add default via "$gw"
  ip netns exec "$n" "$B/routed" --node-name "node-$i" --datastore "$DS" --ip "${node_ip[$i]}/24" \
    --socket "$work/n$i.sock" --no-forward-rules >"$work/n$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 1 300); do [ -S "$work/n$i.sock" ] && break; sleep 0.1; done
done
# Pods: two on node-0, one on node-1 (same subnet), one on node-2 (other subnet).
declare -A pod_ip
add_pod() { # node pod
  local p="rtp-$2-$tag"; mkns "$p"
  local conf="{\"cniVersion\":\"1.0.0\",\"name\":\"r\",\"type\":\"routed-cni\",\"socket\":\"$work/n$1.sock\"}"
  local out
  out=$(echo "$conf" | ip netns exec "rtp-n$1-$tag" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    CNI_COMMAND=ADD CNI_CONTAINERID="$2" CNI_NETNS="/var/run/netns/$p" CNI_IFNAME=eth0 "$B/routed-cni")
  pod_ip[$2]=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
}
add_pod 0 a; add_pod 0 b; add_pod 1 c; add_pod 2 d
# Wait until pod a reaches the others (routes, VTEPs).
for dst in b c d; do
  ok=0
  for _ in $(seq 1 300); do
    if ip netns exec "rtp-a-$tag" ping -c1 -W1 "${pod_ip[$dst]}" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || { echo "pod a cannot reach pod $dst (${pod_ip[$dst]})" >&2; cat "$work"/n*.log >&2; exit 1; }
done

# One iperf3 run: server in $1, client in $2 towards $3. Prints Gbit/s received.
measure() {
  ip netns exec "$1" iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
  local server=$!
  pids+=("$server")
  for _ in $(seq 1 50); do
    ip netns exec "$1" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.1
  done
  ip netns exec "$2" iperf3 -c "$3" -t "$T" -J >"$work/iperf.json"
  wait "$server" 2>/dev/null || true
  python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$work/iperf.json"
}
# R rounds, the four paths interleaved in each, so background load hits them alike; medians.
R=${ROUNDS:-3}
: >"$work/runs"
for r in $(seq 1 "$R"); do
  echo "ceiling $(measure "rtp-cb-$tag" "rtp-ca-$tag" 10.99.0.2)" >>"$work/runs"
  echo "same $(measure "rtp-b-$tag" "rtp-a-$tag" "${pod_ip[b]}")" >>"$work/runs"
  echo "plain $(measure "rtp-c-$tag" "rtp-a-$tag" "${pod_ip[c]}")" >>"$work/runs"
  echo "vxlan $(measure "rtp-d-$tag" "rtp-a-$tag" "${pod_ip[d]}")" >>"$work/runs"
done
median() { grep "^$1 " "$work/runs" | awk '{print $2}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ceiling=$(median ceiling); same=$(median same); plain=$(median plain); vxlan=$(median vxlan)
# The path really was what the row says: encapsulation counters on node-0.
enc=$(ip -n "rtp-n0-$tag" -s -j link show vxlan.routed | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["packets"])')
mtu=$(ip -n "rtp-a-$tag" -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mtu"])')
nft=$(ip netns exec "rtp-n0-$tag" nft list ruleset 2>/dev/null | grep -c . || true)
ratio() { python3 -c "print('%.2f' % ($1 / $ceiling))"; }
echo "| path | Gbit/s | ratio to ceiling |"
echo "|---|---|---|"
echo "| raw veth pair (ceiling, MTU 1500) | $ceiling | 1.00 |"
echo "| same node, pod → pod | $same | $(ratio "$same") |"
echo "| across nodes, one subnet, plain route | $plain | $(ratio "$plain") |"
echo "| across subnets, VXLAN (vxlan.routed) | $vxlan | $(ratio "$vxlan") |"
echo
echo "pod MTU $mtu; vxlan.routed tx packets on node-1 after the runs: $enc; nft ruleset lines on node-1: $nft;"
echo "iperf3, one TCP stream, ${T}s per run, median of $R interleaved rounds; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
