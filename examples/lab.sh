#!/usr/bin/env bash
# The routed lab: a three-node cluster in network namespaces on this machine.
#
#   examples/lab.sh up [--etcd] [--tor bird|frr|gobgp] [--rr]   build, create the cluster, wait for convergence, check, summarise
#   examples/lab.sh check         all-pairs pod reachability, external host -> pods, pods -> external
#   examples/lab.sh status        routectl status of each node, blocks, the ToR's view
#   examples/lab.sh down          remove every namespace, process and file the lab made
#
#             ext (10.78.0.2) ── external host, knows nothing of pods: default route via the ToR
#               │
#             tor (10.78.0.1 / 10.77.0.254)  BIRD 2, AS 65000, eBGP to every node; a bridge = the rack
#         ┌─────┼─────┐
#       node-1 node-2 node-3   (10.77.0.1-3/24) routed, AS 64512, iBGP full mesh + the ToR
#       2 pods 2 pods 2 pods   created through routed-cni, addresses from pool lab-pods 10.244.0.0/16
#
# With --rr the cluster has six nodes set up the Calico way for route reflection: node-1 and node-2
# are labelled route-reflector=true with cluster ID 1.0.0.1, the mesh is off, one peer
# (--node-selector 'all()' --peer-selector "route-reflector == 'true'") makes node-3..6 their
# clients, and the ToR peers only with the two reflectors, as an iBGP client (AS 64512), so it
# gets every block with the owning node as next hop. `up --rr` prints the topology it made.
# The ToR is BIRD 2 by default; `--tor frr` runs FRR (zebra + bgpd) and `--tor gobgp` GoBGP instead.
# GoBGP programs no kernel routes of its own (that takes zebra, and GoBGP 3.10's zebra client panics
# on FRR 8.4's API), so with it the lab stands in for zebra: before the external host's checks it
# writes GoBGP's best routes into the ToR's kernel (protocol 250) and removes those GoBGP dropped.
# The datastore is the embedded SQLite file $LAB/routed.db (or, with --etcd, an etcd that runs in the
# ToR namespace on 10.77.0.254). Everything lives under $ROUTED_LAB_DIR (default /tmp/routed-lab);
# namespaces are named $ROUTED_LAB_NAME-* (default "rlab"). ROUTED_BIN_DIR=DIR uses binaries already
# built there instead of `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LAB=${ROUTED_LAB_DIR:-/tmp/routed-lab}
P=${ROUTED_LAB_NAME:-rlab}
NODES=3
PODS_PER_NODE=2
POOL_CIDR=10.244.0.0/16
RACK=10.77.0
EXT_NET=10.78.0
TOR_AS=65000
NODE_AS=64512

cmd=${1:-up}
shift || true
use_etcd=0
use_rr=0
TOR_KIND=bird
while [ $# -gt 0 ]; do
    case "$1" in
        --etcd) use_etcd=1 ;;
        --rr) use_rr=1 ;;
        --tor) TOR_KIND=${2:-}; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$TOR_KIND" in bird | frr | gobgp) ;; *) echo "--tor bird|frr|gobgp" >&2; exit 2 ;; esac
# Route-reflection mode (--rr, remembered for check/status/down): six nodes, two reflectors, an iBGP ToR.
if [ "$cmd" != up ] && [ -f "$LAB/rr" ]; then use_rr=1; fi
RR_CLUSTER_ID=1.0.0.1
REFLECTORS="1 2"
if [ $use_rr = 1 ]; then
    NODES=6
    TOR_AS=$NODE_AS
fi
# The nodes the ToR peers with: every node, or only the reflectors.
tor_neighbours() { if [ $use_rr = 1 ]; then echo $REFLECTORS; else seq 1 $NODES; fi; }

say() { printf '==> %s\n' "$*"; }
# Foreground commands only: a daemon is started with `ip netns exec ... &` itself, so that `$!` is
# the daemon's pid (ip execs it), not that of a subshell around it.
ns() { local n=$1; shift; ip netns exec "$n" "$@"; }
TOR=$P-tor
EXT=$P-ext
node_ns() { echo "$P-n$1"; }
pod_ns() { echo "$P-n$1-p$2"; }

bin_dir() {
    if [ -n "${ROUTED_BIN_DIR:-}" ]; then echo "$ROUTED_BIN_DIR"; else echo "$ROOT/target/release"; fi
}

datastore_url() {
    if [ -f "$LAB/etcd.port" ]; then
        echo "etcd://$RACK.254:$(cat "$LAB/etcd.port")"
    else
        echo "sqlite://$LAB/routed.db"
    fi
}

# routectl against the lab's datastore (from the ToR namespace, which reaches etcd too).
R() { ns "$TOR" "$(bin_dir)/routectl" --datastore "$(datastore_url)" "$@"; }

install_prereqs() {
    local need=()
    command -v protoc >/dev/null || need+=(protobuf-compiler)
    [ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
    command -v cc >/dev/null || need+=(build-essential)
    command -v ip >/dev/null || need+=(iproute2)
    command -v nft >/dev/null || need+=(nftables)
    command -v ping >/dev/null || need+=(iputils-ping)
    command -v tcpdump >/dev/null || need+=(tcpdump)
    command -v jq >/dev/null || need+=(jq)
    command -v curl >/dev/null || need+=(curl)
    command -v bird >/dev/null || need+=(bird2)
    [ "$TOR_KIND" = frr ] && { [ -x /usr/lib/frr/bgpd ] || need+=(frr); }
    [ "$TOR_KIND" = gobgp ] && { command -v gobgpd >/dev/null || need+=(gobgpd); }
    if [ $use_etcd = 1 ]; then command -v etcd >/dev/null || need+=(etcd-server etcd-client); fi
    if [ ${#need[@]} -gt 0 ]; then
        say "installing ${need[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
    command -v cargo >/dev/null || [ -n "${ROUTED_BIN_DIR:-}" ] || {
        echo "cargo not found: install Rust (rustup) first" >&2
        exit 1
    }
}

remember_pid() { echo "$1" >>"$LAB/pids"; }
remember_ns() { echo "$1" >>"$LAB/netns"; }
add_ns() { ip netns add "$1"; remember_ns "$1"; ip -n "$1" link set lo up; }

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out after ${limit}s waiting for: $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

topology() {
    say "network namespaces: $TOR ($TOR_KIND), $EXT, $(node_ns 1)..$(node_ns $NODES)"
    add_ns "$TOR"
    ns "$TOR" ip link add br0 type bridge
    ns "$TOR" ip addr add "$RACK.254/24" dev br0
    ns "$TOR" ip link set br0 up
    ns "$TOR" sysctl -qw net.ipv4.ip_forward=1
    add_ns "$EXT"
    ip -n "$EXT" link add eth0 type veth peer name ext0 netns "$TOR"
    ip -n "$EXT" addr add "$EXT_NET.2/24" dev eth0
    ip -n "$EXT" link set eth0 up
    ip -n "$EXT" route add default via "$EXT_NET.1"
    ns "$TOR" ip addr add "$EXT_NET.1/24" dev ext0
    ns "$TOR" ip link set ext0 up
    for i in $(seq 1 $NODES); do
        local n
        n=$(node_ns "$i")
        add_ns "$n"
        ip -n "$n" link add eth0 type veth peer name "n$i" netns "$TOR"
        ns "$TOR" ip link set "n$i" master br0 up
        ip -n "$n" addr add "$RACK.$i/24" dev eth0
        ip -n "$n" link set eth0 up
        # Like any real host, a node has a default route (the ToR). Proxy ARP for the pods' gateway
        # 169.254.1.1 answers only for addresses the node can route.
        ip -n "$n" route add default via "$RACK.254"
    done
}

tor_kind() { cat "$LAB/tor" 2>/dev/null || echo bird; }

start_tor() {
    echo "$TOR_KIND" >"$LAB/tor"
    case "$TOR_KIND" in
        bird) start_bird ;;
        frr) start_frr ;;
        gobgp) start_gobgp ;;
    esac
}

start_frr() {
    say "ToR: FRR (zebra + bgpd), AS $TOR_AS, eBGP to every node; originates $EXT_NET.0/24"
    # FRR's daemons run as its own user (root is not in its vty group): they get a directory of theirs.
    local F=$LAB/frr
    mkdir -p "$F/vty"
    echo "hostname tor" >"$F/zebra.conf"
    {
        echo "frr defaults traditional"
        echo "hostname tor"
        echo "router bgp $TOR_AS"
        echo " bgp router-id $RACK.254"
        echo " no bgp ebgp-requires-policy"
        echo " no bgp network import-check"
        echo " bgp graceful-restart"
        for i in $(tor_neighbours); do
            echo " neighbor $RACK.$i remote-as $NODE_AS"
            echo " neighbor $RACK.$i timers connect 2"
        done
        echo " address-family ipv4 unicast"
        echo "  network $EXT_NET.0/24"
        echo " exit-address-family"
    } >"$F/bgpd.conf"
    chown -R frr:frr "$F"
    ip netns exec "$TOR" /usr/lib/frr/zebra -f "$F/zebra.conf" -i "$F/zebra.pid" -z "$F/zserv.api" \
        --vty_socket "$F/vty" -u frr -g frr -P 0 --log "file:$F/zebra.log" >/dev/null 2>&1 &
    remember_pid $!
    wait_until 10 "zebra's socket" test -S "$F/zserv.api"
    ip netns exec "$TOR" /usr/lib/frr/bgpd -f "$F/bgpd.conf" -i "$F/bgpd.pid" -z "$F/zserv.api" \
        --vty_socket "$F/vty" -u frr -g frr -P 0 --log "file:$F/bgpd.log" >/dev/null 2>&1 &
    remember_pid $!
}

start_gobgp() {
    say "ToR: GoBGP, AS $TOR_AS, eBGP to every node; originates $EXT_NET.0/24"
    {
        printf '[global.config]\n  as = %s\n  router-id = "%s"\n  port = 179\n' "$TOR_AS" "$RACK.254"
        for i in $(tor_neighbours); do
            printf '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "%s"\n    peer-as = %s\n' "$RACK.$i" "$NODE_AS"
            printf '  [neighbors.timers.config]\n    connect-retry = 2\n'
            printf '  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = "ipv4-unicast"\n'
        done
    } >"$LAB/gobgpd.toml"
    ip netns exec "$TOR" gobgpd -f "$LAB/gobgpd.toml" -p --pprof-disable --api-hosts 127.0.0.1:50051 >"$LAB/gobgpd.log" 2>&1 &
    remember_pid $!
    # The API can answer before the RIB takes routes: add until it lists the prefix.
    wait_until 20 "GoBGP to take $EXT_NET.0/24" gobgp_originate
}

gobgp_originate() {
    ns "$TOR" gobgp global rib add "$EXT_NET.0/24" >/dev/null 2>&1 || true
    ns "$TOR" gobgp global rib -a ipv4 | grep -q "$EXT_NET.0/24"
}

# GoBGP's best routes with a next hop on the rack, written into the ToR's kernel as zebra would;
# a route of the lab's protocol that GoBGP no longer has goes.
GOBGP_FIB_PROTO=250
gobgp_fib_sync() {
    local want
    want=$(tor_routes | awk -v rack="$RACK." 'index($3, rack) == 1')
    local prefix nexthop
    while read -r prefix _ nexthop; do
        if [ -n "$prefix" ]; then
            ns "$TOR" ip route replace "$prefix" via "$nexthop" proto $GOBGP_FIB_PROTO
        fi
    done <<<"$want"
    ip -n "$TOR" -4 route show proto $GOBGP_FIB_PROTO | while read -r prefix _; do
        if ! grep -q "^$prefix via " <<<"$want"; then
            ns "$TOR" ip route del "$prefix" proto $GOBGP_FIB_PROTO
        fi
    done
}

# The ToR's best routes as "PREFIX via NEXTHOP" lines, whatever the daemon.
tor_routes() {
    case "$(tor_kind)" in
        bird) ip -n "$TOR" -4 route show proto bird ;;
        frr) ip -n "$TOR" -4 route show proto bgp | sed "s/ nhid [0-9]*//" ;;
        gobgp) ns "$TOR" gobgp global rib -a ipv4 | awk '$1 ~ /^\*>/ { sub(/^\*>/, "", $1); p = ($1 == "" ? $2 : $1); n = ($1 == "" ? $3 : $2); print p " via " n }' ;;
    esac
}

tor_sessions() {
    case "$(tor_kind)" in
        bird) birdc -s "$LAB/bird.ctl" show protocols | grep -E "Name|BGP" ;;
        frr) ns "$TOR" vtysh --vty_socket "$LAB/frr/vty" -d bgpd -c "show bgp summary" ;;
        gobgp) ns "$TOR" gobgp neighbor ;;
    esac
}

start_bird() {
    say "ToR: BIRD 2, AS $TOR_AS, eBGP to every node; exports the external subnet $EXT_NET.0/24"
    {
        echo "router id $RACK.254;"
        echo "log \"$LAB/bird.log\" all;"
        echo "protocol device { scan time 10; }"
        echo "protocol direct { ipv4; interface \"ext0\"; }"
        echo "protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }"
        echo "template bgp rack_node {"
        echo "  local $RACK.254 as $TOR_AS;"
        echo "  ipv4 { import all; export where source = RTS_DEVICE; };"
        echo "  graceful restart on;"
        if [ $use_rr = 1 ]; then echo "  direct;"; fi
        echo "  connect delay time 1; connect retry time 2; error wait time 1, 10;"
        echo "}"
        for i in $(tor_neighbours); do
            echo "protocol bgp node_$i from rack_node { neighbor $RACK.$i as $NODE_AS; }"
        done
    } >"$LAB/bird.conf"
    ip netns exec "$TOR" bird -f -c "$LAB/bird.conf" -s "$LAB/bird.ctl" >"$LAB/bird.out" 2>&1 &
    remember_pid $!
    wait_until 10 "BIRD control socket" test -S "$LAB/bird.ctl"
}

start_etcd() {
    local port=2379
    say "datastore: etcd in $TOR on $RACK.254:$port"
    ip netns exec "$TOR" etcd --name lab --data-dir "$LAB/etcd" \
        --listen-client-urls "http://$RACK.254:$port" --advertise-client-urls "http://$RACK.254:$port" \
        --listen-peer-urls "http://127.0.0.1:2380" --initial-advertise-peer-urls "http://127.0.0.1:2380" \
        --initial-cluster "lab=http://127.0.0.1:2380" >"$LAB/etcd.log" 2>&1 &
    remember_pid $!
    echo "$port" >"$LAB/etcd.port"
    wait_until 30 "etcd" ns "$TOR" etcdctl --endpoints "$RACK.254:$port" endpoint health
}

start_agents() {
    for i in $(seq 1 $NODES); do
        # ROUTED_LAB_OBSERVABILITY=1: both BIRD-compatible sockets and /metrics on each agent.
        local obs=()
        if [ "${ROUTED_LAB_OBSERVABILITY:-0}" = 1 ]; then
            obs=(--bird-socket "$LAB/node-$i-bird.ctl" --bird1-socket "$LAB/node-$i-bird1.ctl"
                --metrics-listen "$RACK.$i:9099")
        fi
        ip netns exec "$(node_ns "$i")" "$(bin_dir)/routed" --node-name "node-$i" --datastore "$(datastore_url)" \
            --ip "$RACK.$i/24" --socket "$LAB/node-$i.sock" "${obs[@]}" >"$LAB/node-$i.log" 2>&1 &
        remember_pid $!
    done
    for i in $(seq 1 $NODES); do
        wait_until 30 "node-$i's agent to be ready" \
            curl -sf --unix-socket "$LAB/node-$i.sock" http://routed/readyz
    done
}

cni_call() { # cni_call COMMAND NODE POD
    local n=$2 p=$3
    local conf="{\"cniVersion\":\"1.0.0\",\"name\":\"lab\",\"type\":\"routed-cni\",\"socket\":\"$LAB/node-$n.sock\"}"
    echo "$conf" | ns "$(node_ns "$n")" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        CNI_COMMAND="$1" CNI_CONTAINERID="lab-$n-$p" CNI_NETNS="/var/run/netns/$(pod_ns "$n" "$p")" \
        CNI_IFNAME=eth0 CNI_PATH="$(bin_dir)" \
        CNI_ARGS="K8S_POD_NAMESPACE=lab;K8S_POD_NAME=pod-$n-$p" "$(bin_dir)/routed-cni"
}

create_pods() {
    say "pods: $PODS_PER_NODE per node through routed-cni"
    for i in $(seq 1 $NODES); do
        for p in $(seq 1 $PODS_PER_NODE); do
            add_ns "$(pod_ns "$i" "$p")"
            cni_call ADD "$i" "$p" >"$LAB/pod-$i-$p.json"
            jq -r '.ips[0].address' "$LAB/pod-$i-$p.json" | cut -d/ -f1 >"$LAB/pod-$i-$p.ip"
            printf '    %-12s on node-%s  %s\n' "pod-$i-$p" "$i" "$(cat "$LAB/pod-$i-$p.ip")"
        done
    done
}

pod_ip() { cat "$LAB/pod-$1-$2.ip"; }

# True when every node's kernel has a route to every other node's blocks and the ToR has all blocks.
converged() {
    local blocks
    blocks=$(R ipam show -o json) || return 1
    for i in $(seq 1 $NODES); do
        local routes
        routes=$(ip -n "$(node_ns "$i")" -4 route show proto 232)
        # Learned routes use kernel nexthop objects: "PREFIX nhid N via GW dev IF ...".
        grep -Eq "^$EXT_NET.0/24 (nhid [0-9]+ )?via $RACK.254 " <<<"$routes" || return 1
        for j in $(seq 1 $NODES); do
            [ "$i" = "$j" ] && continue
            for b in $(jq -r ".[] | select(.affinity == \"node-$j\") | .cidr" <<<"$blocks"); do
                grep -Eq "^$b (nhid [0-9]+ )?via $RACK.$j " <<<"$routes" || return 1
            done
        done
    done
    # The ToR has every block, with the owning node as next hop.
    local tor
    tor=$(tor_routes)
    for j in $(seq 1 $NODES); do
        for b in $(jq -r ".[] | select(.affinity == \"node-$j\") | .cidr" <<<"$blocks"); do
            grep -q "^$b via $RACK.$j\b" <<<"$tor" || return 1
        done
    done
}

ping_ok() { # ping_ok NS DEST: up to three tries (the first may wait for ARP)
    local t
    for t in 1 2 3; do
        ns "$1" ping -c 1 -W 1 -q "$2" >/dev/null 2>&1 && return 0
    done
    return 1
}

# Source address of the first echo request that reaches the external host from pod $1-$2.
seen_source_at_ext() {
    local out="$LAB/capture.$$"
    ip netns exec "$EXT" timeout 8 tcpdump -ni eth0 -l -c 1 'icmp[icmptype] == icmp-echo' >"$out" 2>"$out.err" &
    local cap=$!
    wait_until 5 "tcpdump to listen" grep -q "listening on" "$out.err" || true
    ns "$(pod_ns "$1" "$2")" ping -c 2 -W 1 -q "$EXT_NET.2" >/dev/null 2>&1 || true
    wait "$cap" 2>/dev/null || true
    awk '/ICMP echo request/ {print $3; exit}' "$out"
    rm -f "$out" "$out.err"
}

check() {
    local pairs=0 ok=0 failures=()
    say "pod -> pod, every pair"
    for i in $(seq 1 $NODES); do for p in $(seq 1 $PODS_PER_NODE); do
        for j in $(seq 1 $NODES); do for q in $(seq 1 $PODS_PER_NODE); do
            [ "$i$p" = "$j$q" ] && continue
            pairs=$((pairs + 1))
            if ping_ok "$(pod_ns "$i" "$p")" "$(pod_ip "$j" "$q")"; then
                ok=$((ok + 1))
            else
                failures+=("pod-$i-$p -> pod-$j-$q ($(pod_ip "$j" "$q"))")
            fi
        done; done
    done; done
    echo "    $ok/$pairs pod pairs reachable"
    if [ "$(tor_kind)" = gobgp ]; then
        say "ToR: GoBGP's best routes into the ToR's kernel (protocol $GOBGP_FIB_PROTO, standing in for zebra)"
        gobgp_fib_sync
        ip -n "$TOR" -4 route show proto $GOBGP_FIB_PROTO | sed 's/^/    /'
    fi
    local ext=0 ext_ok=0
    say "external host $EXT_NET.2 -> every pod (routed by the ToR from BGP)"
    for i in $(seq 1 $NODES); do for p in $(seq 1 $PODS_PER_NODE); do
        ext=$((ext + 1))
        if ping_ok "$EXT" "$(pod_ip "$i" "$p")"; then
            ext_ok=$((ext_ok + 1))
        else
            failures+=("external -> pod-$i-$p ($(pod_ip "$i" "$p"))")
        fi
    done; done
    echo "    $ext_ok/$ext pods reachable from the external host"
    local nat
    nat=$(R pool list -o json | jq -r '.[] | select(.name == "lab-pods") | .nat_outgoing')
    say "pod -> external host: the source address the external host sees (natOutgoing=$nat)"
    local src_ok=0
    for i in $(seq 1 $NODES); do
        local src want
        src=$(seen_source_at_ext "$i" 1)
        if [ "$nat" = "true" ]; then want="$RACK.$i"; else want=$(pod_ip "$i" 1); fi
        printf '    pod-%s-1 (%s) arrives as %s\n' "$i" "$(pod_ip "$i" 1)" "${src:-nothing}"
        if [ "$src" = "$want" ]; then
            src_ok=$((src_ok + 1))
        else
            failures+=("pod-$i-1 -> external arrived as '${src:-nothing}', expected $want")
        fi
    done
    echo "summary: pod pairs $ok/$pairs, external->pod $ext_ok/$ext, pod->external source $src_ok/$NODES (natOutgoing=$nat)"
    if [ ${#failures[@]} -gt 0 ]; then
        printf 'FAILED: %s\n' "${failures[@]}"
        return 1
    fi
    echo "lab OK"
}

status() {
    for i in $(seq 1 $NODES); do
        say "node-$i: routectl status"
        "$(bin_dir)/routectl" status --socket "$LAB/node-$i.sock" || true
        echo "    kernel: $(ip -n "$(node_ns "$i")" -4 route show proto 231 | wc -l) blackhole(s), $(ip -n "$(node_ns "$i")" -4 route show proto 232 | wc -l) BGP route(s), $(ip -n "$(node_ns "$i")" -4 route show proto 230 | wc -l) pod route(s)"
    done
    say "blocks"
    R ipam show
    say "ToR ($(tor_kind)): sessions and routes"
    tor_sessions || true
    tor_routes | sed 's/^/    /'
}

up() {
    if [ -d "$LAB" ] && [ -f "$LAB/pids" ]; then
        echo "a lab is already up in $LAB: run '$0 down' first" >&2
        exit 1
    fi
    install_prereqs
    if [ -z "${ROUTED_BIN_DIR:-}" ]; then
        say "building (cargo build --release)"
        cargo build --release --quiet --bin routed --bin routed-cni --bin routectl
    fi
    mkdir -p "$LAB"
    : >"$LAB/pids"
    : >"$LAB/netns"
    local t0=$SECONDS
    topology
    start_tor
    if [ $use_etcd = 1 ]; then start_etcd; fi
    say "datastore $(datastore_url): pool lab-pods $POOL_CIDR, BGP peer tor ($RACK.254, AS $TOR_AS)"
    R pool create lab-pods --cidr "$POOL_CIDR" >/dev/null
    if [ $use_rr = 1 ]; then
        setup_rr
    else
        R peer create tor --peer-ip "$RACK.254" --as "$TOR_AS" >/dev/null
        say "agents: routed on node-1..node-$NODES (AS $NODE_AS, full mesh)"
        start_agents
    fi
    create_pods
    say "waiting for convergence (every block in every other node's kernel and at the ToR)"
    wait_until 60 "routes to converge" converged
    echo "    converged $((SECONDS - t0)) s after the first namespace was made"
    status
    check
    echo
    echo "The lab is up. Try: ip netns exec $(pod_ns 1 1) ping $(pod_ip 3 2)"
    echo "                    $0 status | $0 check | $0 down"
}

# --rr: Calico's recipe. Peers and mesh off first, then the agents, then the reflectors' labels and
# cluster IDs (a node record exists once its agent registered it).
setup_rr() {
    touch "$LAB/rr"
    R config set --mesh off >/dev/null
    R peer create to-reflectors --as "$NODE_AS" --node-selector 'all()' \
        --peer-selector "route-reflector == 'true'" >/dev/null
    R peer create tor --peer-ip "$RACK.254" --as "$TOR_AS" \
        --node-selector "route-reflector == 'true'" >/dev/null
    say "agents: routed on node-1..node-$NODES (AS $NODE_AS, mesh off)"
    start_agents
    for i in $REFLECTORS; do
        R node label "node-$i" route-reflector=true >/dev/null
        R node set "node-$i" --rr-cluster-id "$RR_CLUSTER_ID" >/dev/null
    done
    rr_topology
}

rr_topology() {
    say "route-reflection topology (cluster ID $RR_CLUSTER_ID, AS $NODE_AS, mesh off)"
    local clients=""
    for i in $(seq 1 $NODES); do
        case " $REFLECTORS " in *" $i "*) ;; *) clients="$clients node-$i($RACK.$i)" ;; esac
    done
    for i in $REFLECTORS; do
        echo "    reflector node-$i ($RACK.$i): label route-reflector=true, cluster $RR_CLUSTER_ID"
    done
    echo "    clients:$clients — each peers with both reflectors (peer to-reflectors)"
    echo "    ToR $RACK.254 ($TOR_KIND, AS $TOR_AS): iBGP client of node-1 and node-2 only (peer tor)"
    echo "    reflectors peer with each other as plain iBGP (same cluster ID)"
}

down() {
    if [ -f "$LAB/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
        done <"$LAB/pids"
        sleep 0.3
        while read -r pid; do
            [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
        done <"$LAB/pids"
    fi
    if [ -f "$LAB/netns" ]; then
        while read -r n; do
            [ -n "$n" ] && ip netns del "$n" 2>/dev/null || true
        done <"$LAB/netns"
    fi
    rm -rf "$LAB"
    echo "lab removed ($LAB)"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    status) status ;;
    check) check ;;
    *) echo "usage: $0 up [--etcd] [--tor bird|frr|gobgp] [--rr] | check | status | down" >&2; exit 2 ;;
esac
