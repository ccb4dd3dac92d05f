#!/usr/bin/env bash
# IPIP end to end (issue 6), run inside the VM by tests/ipip_vm.rs:
#   tests/vm/run.sh tests/vm/ipip-lab.sh
# Needs a kernel with ipip (the VM's Debian kernel) and the built binaries (ROUTED_BIN_DIR,
# default target/debug). Prints one PASS/FAIL line per check and exits non-zero on any FAIL.
#
# Topology: two subnets joined by a router namespace that has no BGP and no route for the pods,
# so pod traffic between the subnets crosses it only encapsulated.
#
#        node-1 10.100.1.1 ─┐                         ┌─ 10.100.2.3 node-3
#                           ├─ br-a ── router ── rb3 ─┘
#        node-2 10.100.1.2 ─┘  10.100.1.254  10.100.2.254
#
# Three routed agents (full BGP mesh, one SQLite store on the VM's tmpfs), pool 10.244.0.0/16,
# two pods per node through routed-cni. Mode Always, then CrossSubnet (changed while running):
# - every pod reaches every other pod;
# - each node's tunl0: up, MTU 1480, the /32 IPAM gave handle ipip-tunnel-addr-<node>, recorded on
#   the Node; the node itself reaches remote pods from that address;
# - a capture on the router (all its ports) shows each cross-node ping encapsulated (protocol 4,
#   outer node addresses) when the mode asks for it, and plain otherwise: Always encapsulates all
#   cross-node traffic, CrossSubnet only the traffic between subnet A and subnet B.
set -u
export LC_ALL=C
bin=${ROUTED_BIN_DIR:-target/debug}
routed=$bin/routed
cni=$bin/routed-cni
routectl=$bin/routectl
WAIT=${ROUTED_LAB_WAIT:-120} # seconds to wait for convergence (software emulation is slow)

failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
info() { echo "---- $(date +%T) $*"; }

for tool in "$routed" "$cni" "$routectl"; do
    [ -x "$tool" ] || { fail "setup: $tool not built (cargo build --bins)"; exit 1; }
done
for tool in ip tcpdump jq curl ping; do
    command -v "$tool" >/dev/null || { fail "setup: $tool not installed"; exit 1; }
done

work=$(mktemp -d /tmp/ipip-lab.XXXXXX)
export ROUTED_DATASTORE="sqlite://$work/routed.db"
id=$$
R=ipl-r-$id
declare -A NS ADDR SUBNET
nodes="node-1 node-2 node-3"
NS[node-1]=ipl-n1-$id ADDR[node-1]=10.100.1.1 SUBNET[node-1]=a
NS[node-2]=ipl-n2-$id ADDR[node-2]=10.100.1.2 SUBNET[node-2]=a
NS[node-3]=ipl-n3-$id ADDR[node-3]=10.100.2.3 SUBNET[node-3]=b
pods=()            # pod names
declare -A POD_NS POD_IP POD_NODE
agent_pids=()
tcpdump_pid=""

cleanup() {
    [ -n "$tcpdump_pid" ] && kill "$tcpdump_pid" 2>/dev/null
    for pid in "${agent_pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${agent_pids[@]}"; do wait "$pid" 2>/dev/null; done
    if [ -n "${ROUTED_VM_OUT:-}" ] && [ -d "${ROUTED_VM_OUT:-}" ]; then
        cp "$work"/*.log "$ROUTED_VM_OUT"/ 2>/dev/null
    fi
    for p in "${pods[@]}"; do ip netns del "${POD_NS[$p]}" 2>/dev/null; done
    for n in $nodes; do ip netns del "${NS[$n]}" 2>/dev/null; done
    ip netns del "$R" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Runs "$@" every half second until it succeeds or $WAIT seconds pass; the last output is in $out.
out=""
wait_until() {
    local deadline=$(($(date +%s) + WAIT))
    while :; do
        if out=$("$@" 2>&1); then return 0; fi
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# --- topology ---------------------------------------------------------------------------------
info "topology"
ip netns add "$R"
ip -n "$R" link set lo up
ip -n "$R" link add br-a type bridge
ip -n "$R" addr add 10.100.1.254/24 dev br-a
ip -n "$R" link set br-a up
ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1
# No BGP and no route for the pool here: pods cross the router encapsulated or not at all.
ip -n "$R" route add unreachable 10.244.0.0/16
for n in $nodes; do
    ns=${NS[$n]}
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    port=p${n#node-}
    ip -n "$R" link add "$port" type veth peer name eth0 netns "$ns"
    if [ "${SUBNET[$n]}" = a ]; then
        ip -n "$R" link set "$port" master br-a up
        ip -n "$ns" addr add "${ADDR[$n]}/24" dev eth0
        gw=10.100.1.254
    else
        ip -n "$R" addr add 10.100.2.254/24 dev "$port"
        ip -n "$R" link set "$port" up
        ip -n "$ns" addr add "${ADDR[$n]}/24" dev eth0
        gw=10.100.2.254
    fi
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$gw"
done
if ip netns exec "${NS[node-1]}" ping -c 1 -W 5 10.100.2.3 >/dev/null; then
    pass "underlay: node-1 reaches node-3 through the router"
else
    fail "underlay: node-1 cannot reach node-3"
fi

# --- pool and agents --------------------------------------------------------------------------
info "pool ipip-lab 10.244.0.0/16, ipip_mode Always; agents"
if ! o=$("$routectl" pool create ipip-lab --cidr 10.244.0.0/16 --ipip-mode Always 2>&1); then
    fail "routectl pool create: $o"
    exit 1
fi
for n in $nodes; do
    RUST_LOG=${RUST_LOG:-info} ip netns exec "${NS[$n]}" "$routed" --node-name "$n" \
        --ip "${ADDR[$n]}/24" --socket "$work/$n.sock" >"$work/$n.log" 2>&1 &
    agent_pids+=($!)
done
for n in $nodes; do
    if wait_until curl -sf --unix-socket "$work/$n.sock" http://x/readyz; then
        pass "agent $n ready"
    else
        fail "agent $n not ready after ${WAIT}s: $out; log tail: $(tail -5 "$work/$n.log")"
    fi
done

# --- pods -------------------------------------------------------------------------------------
info "pods"
for n in $nodes; do
    for p in a b; do
        pod=pod${n#node-}$p
        pns=ipl-$pod-$id
        ip netns add "$pns"
        conf="{\"cniVersion\":\"1.0.0\",\"name\":\"ipip-lab\",\"type\":\"routed-cni\",\"socket\":\"$work/$n.sock\"}"
        if res=$(echo "$conf" | ip netns exec "${NS[$n]}" env -i PATH="$PATH" CNI_COMMAND=ADD \
            CNI_CONTAINERID="ipip-lab-$pod" CNI_NETNS="/var/run/netns/$pns" CNI_IFNAME=eth0 \
            CNI_PATH=/usr/lib/cni "$cni" 2>&1); then
            ip=$(echo "$res" | jq -r '.ips[0].address' | cut -d/ -f1)
            pods+=("$pod")
            POD_NS[$pod]=$pns POD_IP[$pod]=$ip POD_NODE[$pod]=$n
            echo "     $pod on $n: $ip"
        else
            ip netns del "$pns"
            fail "CNI ADD $pod on $n: $res"
        fi
    done
done
[ "${#pods[@]}" -eq 6 ] && pass "six pods wired by routed-cni" || { fail "only ${#pods[@]} pods"; exit 1; }

# --- checks -----------------------------------------------------------------------------------
tunl_addr() { ip -n "${NS[$1]}" -j -4 addr show dev tunl0 | jq -r '.[0].addr_info[0].local // empty'; }

# tunl0 on every node: up, MTU node-20, a /32 from the pool that the Node record names.
check_tunl0() {
    local n=$1 link addr recorded
    link=$(ip -n "${NS[$n]}" -j link show tunl0 2>/dev/null) || { echo "no tunl0"; return 1; }
    [ "$(echo "$link" | jq -r '.[0].mtu')" = 1480 ] || { echo "mtu: $link"; return 1; }
    echo "$link" | jq -r '.[0].flags[]' | grep -qx UP || { echo "not up: $link"; return 1; }
    addr=$(tunl_addr "$n")
    case "$addr" in 10.244.*) ;; *) echo "tunl0 address '$addr' not from the pool"; return 1 ;; esac
    recorded=$("$routectl" node list -o json | jq -r --arg n "$n" \
        '.[] | select(.name == $n) | .ipv4_ipip_tunnel_addr // empty')
    [ "$recorded" = "$addr" ] || { echo "Node $n records '$recorded', tunl0 has $addr"; return 1; }
    echo "$addr"
}

# Does node $1 send to pod $2 the way mode $3 asks? Always: via the pod's node on tunl0;
# CrossSubnet: tunl0 across subnets, eth0 within one.
encapsulated() { # encapsulated MODE NODE_FROM NODE_TO
    [ "$1" = Always ] || [ "${SUBNET[$2]}" != "${SUBNET[$3]}" ]
}
# Every node's route to every remote pod (`ip route get`, one `ip -batch` per node): via the pod's
# node on tunl0 when the mode encapsulates, on eth0 otherwise. Mismatches are printed.
check_all_routes() {
    local mode=$1 n pod bad=0 got want i
    local -a remote lines
    for n in $nodes; do
        remote=()
        for pod in "${pods[@]}"; do [ "${POD_NODE[$pod]}" = "$n" ] || remote+=("$pod"); done
        mapfile -t lines < <(for pod in "${remote[@]}"; do echo "route get ${POD_IP[$pod]}"; done |
            ip -n "${NS[$n]}" -batch - 2>&1 | grep -v '^ ')
        for i in "${!remote[@]}"; do
            pod=${remote[$i]}
            got=${lines[$i]:-}
            if encapsulated "$mode" "$n" "${POD_NODE[$pod]}"; then
                want="via ${ADDR[${POD_NODE[$pod]}]} dev tunl0"
            else
                want="via ${ADDR[${POD_NODE[$pod]}]} dev eth0"
            fi
            case "$got" in *"$want "*) ;; *) echo "$n -> $pod: '$got', want '$want'"; bad=1 ;; esac
        done
    done
    return $bad
}

# Captures on every router port while running "$@"; the capture is in $work/capture.
capture() {
    : >"$work/capture.err"
    ip netns exec "$R" tcpdump -l -n -U -i any 'ip proto 4 or icmp' >"$work/capture" 2>"$work/capture.err" &
    tcpdump_pid=$!
    local deadline=$(($(date +%s) + 30))
    until grep -q listening "$work/capture.err"; do
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.2
    done
    "$@"
    sleep 1
    kill "$tcpdump_pid" 2>/dev/null
    wait "$tcpdump_pid" 2>/dev/null
    tcpdump_pid=""
}

# Pings every pod from every other pod (three tries each, one `ip netns exec` per source pod);
# the pairs that failed are in $unreachable.
unreachable=""
ping_all() {
    local src dst ip
    local -a targets
    unreachable=""
    for src in "${pods[@]}"; do
        targets=()
        for dst in "${pods[@]}"; do [ "$src" = "$dst" ] || targets+=("${POD_IP[$dst]}"); done
        for ip in $(ip netns exec "${POD_NS[$src]}" bash -c 'for ip in "$@"; do
                for i in 1 2 3; do ping -c 1 -W 2 "$ip" >/dev/null && continue 2; done
                echo "$ip"
            done' ping_all "${targets[@]}"); do
            for dst in "${pods[@]}"; do [ "${POD_IP[$dst]}" = "$ip" ] && unreachable="$unreachable $src->$dst"; done
        done
    done
}

# Checks in $work/capture that each cross-node pair's echo requests crossed the router
# encapsulated (protocol 4, outer header from the source's node to the destination's node)
# exactly when mode $1 asks for it, and plain otherwise.
check_capture() {
    local mode=$1 src dst a b key bad="" n_enc=0 n_plain=0 total_ipip
    local -A enc plain outer
    # One pass over the capture: "inner-src inner-dst encapsulated|plain outer-src>outer-dst".
    while read -r isrc idst kind o; do
        key="$isrc $idst"
        if [ "$kind" = encapsulated ]; then
            enc[$key]=$((${enc[$key]:-0} + 1))
            outer[$key]="${outer[$key]:-} $o"
        else
            plain[$key]=$((${plain[$key]:-0} + 1))
        fi
    done < <(awk '
        / IP [0-9.]+ > [0-9.]+: IP [0-9.]+ > [0-9.]+: ICMP echo request/ {
            for (i = 1; i <= NF; i++) if ($i == "IP") break
            os = $(i + 1); od = $(i + 3); sub(":", "", od)
            is = $(i + 5); id = $(i + 7); sub(":", "", id)
            print is, id, "encapsulated", os ">" od; next
        }
        / IP [0-9.]+ > [0-9.]+: ICMP echo request/ {
            for (i = 1; i <= NF; i++) if ($i == "IP") break
            is = $(i + 1); id = $(i + 3); sub(":", "", id)
            print is, id, "plain", "-"
        }' "$work/capture")
    for src in "${pods[@]}"; do
        for dst in "${pods[@]}"; do
            a=${POD_NODE[$src]} b=${POD_NODE[$dst]}
            [ "$a" = "$b" ] && continue
            key="${POD_IP[$src]} ${POD_IP[$dst]}"
            local e=${enc[$key]:-0} p=${plain[$key]:-0} o=${outer[$key]:-}
            if encapsulated "$mode" "$a" "$b"; then
                # Every encapsulated copy must carry the two nodes' addresses outside.
                if [ "$e" -gt 0 ] && [ "$p" -eq 0 ] &&
                    [ -z "$(echo "$o" | tr ' ' '\n' | grep . | grep -vx "${ADDR[$a]}>${ADDR[$b]}")" ]; then
                    n_enc=$((n_enc + 1))
                else
                    bad="$bad $src->$dst(encapsulated=$e,plain=$p,outer=${o# })"
                fi
            else
                if [ "$p" -gt 0 ] && [ "$e" -eq 0 ]; then n_plain=$((n_plain + 1)); else bad="$bad $src->$dst(encapsulated=$e,plain=$p)"; fi
            fi
        done
    done
    total_ipip=0
    for key in "${!enc[@]}"; do total_ipip=$((total_ipip + enc[$key])); done
    if [ -z "$bad" ]; then
        pass "$mode: capture on the router: $n_enc cross-node pairs encapsulated (protocol 4), $n_plain plain; $total_ipip encapsulated echo requests in all"
    else
        fail "$mode: capture on the router disagrees for:$bad"
        echo "     capture (first 40 lines):"
        head -40 "$work/capture" | sed 's/^/     /'
    fi
}

# The node itself reaches pod $2 from its tunnel address (route src and the packet on the wire).
check_host_to_pod() {
    local mode=$1 n=$2 pod=$3 src got to=${POD_NODE[$3]}
    src=$(tunl_addr "$n")
    got=$(ip -n "${NS[$n]}" route get "${POD_IP[$pod]}" | head -1)
    case "$got" in
    *"dev tunl0"*"src $src"*) ;;
    *) fail "$mode: $n -> $pod: route '$got' does not leave tunl0 from its address $src"; return ;;
    esac
    capture ip netns exec "${NS[$n]}" ping -c 2 -W 2 "${POD_IP[$pod]}" >/dev/null
    if grep -qF "IP ${ADDR[$n]} > ${ADDR[$to]}: IP $src > ${POD_IP[$pod]}: ICMP echo request" "$work/capture" &&
        grep -qF "IP ${ADDR[$to]} > ${ADDR[$n]}: IP ${POD_IP[$pod]} > $src: ICMP echo reply" "$work/capture"; then
        pass "$mode: host $n reaches $pod on $to from its tunnel address $src (encapsulated both ways)"
    else
        fail "$mode: host $n -> $pod from $src: no encapsulated echo and reply on the router: $(head -10 "$work/capture")"
    fi
}

run_mode() {
    local mode=$1
    info "mode $mode"
    if wait_until check_all_routes "$mode"; then
        pass "$mode: every node routes remote pods as the mode asks (tunl0 onlink / eth0)"
    else
        fail "$mode: routes after ${WAIT}s: $out"
        for n in $nodes; do echo "     $n:"; ip -n "${NS[$n]}" route | sed 's/^/       /'; done
    fi
    capture ping_all
    if [ -z "$unreachable" ]; then
        pass "$mode: all $((${#pods[@]} * (${#pods[@]} - 1))) pod pairs reach each other"
    else
        fail "$mode: unreachable:$unreachable"
    fi
    check_capture "$mode"
}

info "tunl0"
for n in $nodes; do
    if wait_until check_tunl0 "$n"; then
        pass "$n: tunl0 up, MTU 1480, address $out from the pool, recorded on the Node"
    else
        fail "$n: tunl0: $out"
    fi
done
mtu=$(ip -n "${POD_NS[pod1a]}" -j link show eth0 | jq -r '.[0].mtu')
[ "$mtu" = 1480 ] && pass "pod MTU 1480 (node 1500 - IPIP 20)" || fail "pod eth0 MTU $mtu, want 1480"

run_mode Always
check_host_to_pod Always node-1 pod3a
check_host_to_pod Always node-1 pod2a

info "routectl pool set ipip-lab --ipip-mode CrossSubnet (agents keep running)"
if o=$("$routectl" pool set ipip-lab --ipip-mode CrossSubnet 2>&1); then
    run_mode CrossSubnet
    check_host_to_pod CrossSubnet node-1 pod3b
    check_host_to_pod CrossSubnet node-3 pod2b
else
    fail "routectl pool set: $o"
fi

for n in $nodes; do
    if grep -qE ' (ERROR|panicked)' "$work/$n.log"; then
        echo "---- $n log (errors):"
        grep -E ' (ERROR|WARN|panicked)' "$work/$n.log" | tail -20 | sed 's/^/     /'
    fi
done
if [ "$failures" -gt 0 ]; then
    for n in $nodes; do
        echo "---- $n log (last 30 lines):"
        tail -30 "$work/$n.log" | sed 's/^/     /'
    done
fi
echo "---- guest load $(cut -d' ' -f1-3 /proc/loadavg); busiest processes (CPU time):"
ps -eo time,comm --sort=-time 2>/dev/null | head -6 | sed 's/^/     /'
echo "ipip-lab: $failures failure(s) in $SECONDS s"
[ "$failures" -eq 0 ]
