#!/usr/bin/env bash
# Pod-to-pod TCP throughput (iperf3 between two pods, a raw veth pair as the ceiling), all in one run:
#   ceiling      a raw veth pair between two namespaces (nothing else in the path)
#   same node    pod -> pod on one node (veth -> host routing -> veth)
#   plain        pod -> pod across nodes on one subnet, plain route (VXLAN CrossSubnet, same subnet)
#   vxlan        pod -> pod across subnets through vxlan.routed and a forwarding router
#   ipip         pod -> pod across subnets through tunl0 and the same router (needs the ipip
#                module: in the VM, `--vm`; on a kernel without it the row says so)
# The lab is tests/vxlan.rs's: node-0 and node-1 on subnet A (a bridge), node-2 on subnet B, a
# router namespace joining them, a BGP mesh, one pool with vxlan_mode CrossSubnet. The IPIP row is
# a second, independent cluster on the same underlay (its own datastore, BGP mesh and pool with
# ipip_mode CrossSubnet): ipip-a on subnet A, ipip-b on subnet C. Agents run with
# --no-forward-rules, so no netfilter rule of routed's sits in the path (the script prints every
# node's nftables ruleset size and the route each row took): what is measured is routing plus the
# encapsulation. The agents are paused (SIGSTOP) while iperf3 runs: they are not in the data path.
#
# Usage: [ROUNDS=3] tests/bench/iperf.sh [--vm] [SECONDS]   (root; prints a markdown table;
#        SECONDS per iperf3 run: 5 by default, 15 with --vm)
#   (host)  the debug build of the agents (they are not in the data path); ROUTED_BIN_DIR=DIR
#           uses binaries already built there instead.
#   --vm    builds release binaries (the agents' idle work costs far more under emulation) and
#           runs this script inside tests/vm/run.sh's VM (Debian's kernel, which has ipip);
#           ROUTED_VM_* settings apply (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = --vm ]; then
  shift
  T=${1:-15} # under emulation 5-s runs are too noisy (docs/benchmarks.md)
  target=${CARGO_TARGET_DIR:-$PWD/target}
  case "$target" in /*) ;; *) target=$PWD/$target ;; esac
  if [ -z "${ROUTED_BIN_DIR:-}" ]; then
    cargo build --quiet --release --bins
    export ROUTED_BIN_DIR=$target/release
  fi
  exec tests/vm/run.sh --smp 2 --timeout "${ROUTED_VM_TIMEOUT:-3600}" -- \
    env ROUNDS="${ROUNDS:-3}" tests/bench/iperf.sh "$T"
fi
T=${1:-5}
command -v iperf3 >/dev/null || { echo "missing iperf3 (apt-get install iperf3)" >&2; exit 1; }
if [ -n "${ROUTED_BIN_DIR:-}" ]; then
  B=$ROUTED_BIN_DIR
else
  cargo build --quiet --bin routed --bin routed-cni --bin routectl
  B=${CARGO_TARGET_DIR:-$PWD/target}/debug
fi
work=$(mktemp -d)
tag=$(printf '%x' $$)
nses=()
pids=()
agents=()
cleanup() {
  for p in "${agents[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${nses[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkns() { ip netns add "$1"; ip -n "$1" link set lo up; nses+=("$1"); }
# Polls "$@" every 0.2 s for up to $2 seconds: until_ok SECONDS CMD...
until_ok() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
WAIT=${ROUTED_LAB_WAIT:-180} # seconds for each convergence step (software emulation is slow)
progress() { echo "---- $(date +%T) $*" >&2; } # on stderr: the table stays clean on stdout

# IPIP only where the kernel has it (not this CI machine's kernel: the VM's).
ipip=""
if [ -d /sys/module/ipip ] || modprobe -q ipip 2>/dev/null; then ipip=1; fi

# Ceiling: a veth pair, nothing else.
mkns "rtp-ca-$tag"; mkns "rtp-cb-$tag"
ip -n "rtp-ca-$tag" link add eth0 type veth peer name eth0 netns "rtp-cb-$tag"
ip -n "rtp-ca-$tag" addr add 10.99.0.1/24 dev eth0; ip -n "rtp-ca-$tag" link set eth0 up
ip -n "rtp-cb-$tag" addr add 10.99.0.2/24 dev eth0; ip -n "rtp-cb-$tag" link set eth0 up

# The lab: nodes 0-2 are the VXLAN cluster, nodes 3-4 (when ipip) the IPIP cluster.
DS="sqlite://$work/routed.db"
DS_IPIP="sqlite://$work/routed-ipip.db"
"$B/routectl" --datastore "$DS" pool create bench --cidr 10.92.0.0/16 --vxlan-mode CrossSubnet >/dev/null
nodes=(0 1 2)
if [ -n "$ipip" ]; then
  "$B/routectl" --datastore "$DS_IPIP" pool create bench-ipip --cidr 10.93.0.0/16 --ipip-mode CrossSubnet >/dev/null
  nodes+=(3 4)
fi
rtr="rtp-r-$tag"; mkns "$rtr"
ip netns exec "$rtr" sysctl -qw net.ipv4.ip_forward=1
# Subnet A is a bridge in the router (node-0, node-1, ipip-a); node-2 (subnet B) and ipip-b
# (subnet C) each have a routed port of their own. The receiving side of the tunnel rows has no
# bridge on purpose: with a bridge there the encapsulated rows (not the plain one) measured about
# 3x slower, most likely because the router segments encapsulated GSO packets in software when it
# transmits them on a bridge (no hw_enc_features), and the receiver then decapsulates every
# segment on its own (docs/benchmarks.md).
ip -n "$rtr" link add brA type bridge
ip -n "$rtr" addr add 10.110.1.254/24 dev brA; ip -n "$rtr" link set brA up
node_ip=(10.110.1.1 10.110.1.2 10.110.2.3 10.110.1.4 10.110.3.5)
node_name=(node-0 node-1 node-2 ipip-a ipip-b)
node_ds=("$DS" "$DS" "$DS" "$DS_IPIP" "$DS_IPIP")
for i in "${nodes[@]}"; do
  n="rtp-n$i-$tag"; mkns "$n"
  gw=${node_ip[$i]%.*}.254
  ip -n "$n" link add eth0 type veth peer name "p$i" netns "$rtr"
  case "${node_ip[$i]}" in
  10.110.1.*) ip -n "$rtr" link set "p$i" master brA up ;;
  *) ip -n "$rtr" addr add "$gw/24" dev "p$i"; ip -n "$rtr" link set "p$i" up ;;
  esac
  ip -n "$n" addr add "${node_ip[$i]}/24" dev eth0; ip -n "$n" link set eth0 up
  ip -n "$n" route add default via "$gw"
  ip netns exec "$n" "$B/routed" --node-name "${node_name[$i]}" --datastore "${node_ds[$i]}" \
    --ip "${node_ip[$i]}/24" --socket "$work/n$i.sock" --no-forward-rules >"$work/n$i.log" 2>&1 &
  pids+=($!)
  agents+=($!)
done
progress "agents started: ${node_name[*]:0:${#nodes[@]}}"
for i in "${nodes[@]}"; do
  until_ok "$WAIT" test -S "$work/n$i.sock" || { echo "agent $i has no socket" >&2; cat "$work/n$i.log" >&2; exit 1; }
done
# Pods: two on node-0, one on node-1 (same subnet), one on node-2 (other subnet); with IPIP, e on
# ipip-a and f on ipip-b (other subnet).
declare -A pod_ip pod_node
add_pod() { # node pod
  local p="rtp-$2-$tag"; mkns "$p"
  local conf="{\"cniVersion\":\"1.0.0\",\"name\":\"r\",\"type\":\"routed-cni\",\"socket\":\"$work/n$1.sock\"}"
  local out
  out=$(echo "$conf" | ip netns exec "rtp-n$1-$tag" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    CNI_COMMAND=ADD CNI_CONTAINERID="$2" CNI_NETNS="/var/run/netns/$p" CNI_IFNAME=eth0 "$B/routed-cni")
  pod_ip[$2]=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
  pod_node[$2]=$1
}
add_pod 0 a; add_pod 0 b; add_pod 1 c; add_pod 2 d
paths=(same plain vxlan)
[ -z "$ipip" ] || { add_pod 3 e; add_pod 4 f; paths+=(ipip); }
# Which pod sends to which for each row.
declare -A src=([same]=a [plain]=a [vxlan]=a [ipip]=e) dst=([same]=b [plain]=c [vxlan]=d [ipip]=f)
progress "pods wired; waiting for each path"
# Wait until each row's sender reaches its receiver (routes, VTEPs, tunnel addresses).
for path in "${paths[@]}"; do
  s=${src[$path]} d=${dst[$path]}
  until_ok "$WAIT" ip netns exec "rtp-$s-$tag" ping -c1 -W1 "${pod_ip[$d]}" ||
    { echo "pod $s cannot reach pod $d (${pod_ip[$d]})" >&2; cat "$work"/n*.log >&2; exit 1; }
done

# One iperf3 run: server in $1, client in $2 towards $3. Prints Gbit/s received.
measure() {
  ip netns exec "$1" iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
  local server=$!
  pids+=("$server")
  until_ok 60 bash -c "ip netns exec $1 ss -ltn | grep -q ':5201 '" || true
  ip netns exec "$2" iperf3 -c "$3" -t "$T" -J >"$work/iperf.json"
  wait "$server" 2>/dev/null || true
  python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$work/iperf.json"
}
# Link counters of node $1's device $2: "tx_packets".
tx_packets() {
  ip -n "rtp-n$1-$tag" -s -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["packets"])'
}
# The agents are not in the data path: once every path works they are stopped (SIGSTOP) for the
# measurements, so their own work (timers, datastore polling) takes no CPU from the rows; under
# software emulation it would take most of it. They continue (SIGCONT) before the checks below.
kill -STOP "${agents[@]}"
# R rounds, all paths interleaved in each, so background load hits them alike; medians.
R=${ROUNDS:-3}
: >"$work/runs"
progress "measuring: $R rounds of ceiling ${paths[*]}, ${T}s each"
for r in $(seq 1 "$R"); do
  progress "round $r"
  echo "ceiling $(measure "rtp-cb-$tag" "rtp-ca-$tag" 10.99.0.2)" >>"$work/runs"
  for path in "${paths[@]}"; do
    echo "$path $(measure "rtp-${dst[$path]}-$tag" "rtp-${src[$path]}-$tag" "${pod_ip[${dst[$path]}]}")" >>"$work/runs"
  done
done
kill -CONT "${agents[@]}"
median() { grep "^$1 " "$work/runs" | awk '{print $2}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
all() { grep "^$1 " "$work/runs" | awk '{print $2}' | paste -sd' '; }
ceiling=$(median ceiling)
ratio() { python3 -c "print('%.2f' % ($1 / $ceiling))"; }
declare -A label=(
  [same]="same node, pod → pod"
  [plain]="across nodes, one subnet, plain route"
  [vxlan]="across subnets, VXLAN (vxlan.routed)"
  [ipip]="across subnets, IPIP (tunl0)"
)
where="host, kernel $(uname -r)"
[ "${ROUTED_VM:-}" != 1 ] || where="in the VM, kernel $(uname -r)"
echo "| path ($where) | Gbit/s | ratio to ceiling | runs (Gbit/s) |"
echo "|---|---|---|---|"
echo "| raw veth pair (ceiling, MTU 1500) | $ceiling | 1.00 | $(all ceiling) |"
for path in same plain vxlan ipip; do
  if [ "$path" = ipip ] && [ -z "$ipip" ]; then
    echo "| ${label[$path]} | not measured: this kernel has no ipip module (use --vm) | | |"
    continue
  fi
  v=$(median "$path")
  echo "| ${label[$path]} | $v | $(ratio "$v") | $(all "$path") |"
done
echo
# The path really was what each row says: routes taken and encapsulation counters.
echo "route per row (ip route get in the sender's node):"
for path in "${paths[@]}"; do
  s=${src[$path]} d=${dst[$path]}
  echo "  $path: $(ip -n "rtp-n${pod_node[$s]}-$tag" route get "${pod_ip[$d]}" | head -1)"
done
echo "vxlan.routed tx packets on node-0: $(tx_packets 0 vxlan.routed)"
[ -z "$ipip" ] || echo "tunl0 tx packets on ipip-a: $(tx_packets 3 tunl0)"
for p in a e; do
  [ -n "${pod_ip[$p]:-}" ] || continue
  echo "pod $p MTU: $(ip -n "rtp-$p-$tag" -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mtu"])')"
done
# Nothing of routed's in the pod path: every node's nftables ruleset (agents with --no-forward-rules).
nft_lines=""
for i in "${nodes[@]}"; do
  nft_lines="$nft_lines ${node_name[$i]}=$(ip netns exec "rtp-n$i-$tag" nft list ruleset 2>/dev/null | grep -c . || true)"
done
echo "nft ruleset lines per node:$nft_lines; router=$(ip netns exec "$rtr" nft list ruleset 2>/dev/null | grep -c . || true)"
echo "iperf3, one TCP stream, ${T}s per run, median of $R interleaved rounds; agents: $B; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${ROUTED_VM:-}" = 1 ]; then
  # What else had the guest's CPUs: the agents' idle work costs far more under emulation.
  echo "guest's busiest processes (CPU time, whole run of $SECONDS s):"
  ps -eo time,comm --sort=-time | head -8 | sed 's/^/  /'
fi
