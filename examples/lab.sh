#!/usr/bin/env bash
# The routed lab: `examples/lab.sh up|down|status [--etcd]`.
#
# Today the lab shows the parts that exist: three nodes share one datastore (embedded SQLite by
# default, a private etcd on loopback with --etcd), claim blocks from one pool and hand addresses to
# two pods each, and `routectl ipam show/check` prints the result. Network namespaces, agents, BGP
# and pod traffic join this script as the node agent lands (docs/architecture.md lists the plan).
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${ROUTED_LAB_DIR:-/tmp/routed-lab}
cmd=${1:-up}
use_etcd=0
[ "${2:-}" = "--etcd" ] && use_etcd=1

datastore_url() {
    if [ -f "$LAB/etcd.port" ]; then echo "etcd://127.0.0.1:$(cat "$LAB/etcd.port")"; else echo "sqlite://$LAB/routed.db"; fi
}

install_prereqs() {
    local need=()
    command -v protoc >/dev/null || need+=(protobuf-compiler)
    command -v cc >/dev/null || need+=(build-essential)
    [ $use_etcd = 1 ] && ! command -v etcd >/dev/null && need+=(etcd-server etcd-client)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
}

up() {
    install_prereqs
    echo "==> building"
    cargo build --release --quiet --bin routectl
    mkdir -p "$LAB"
    if [ $use_etcd = 1 ]; then
        local port=$((30000 + RANDOM % 10000))
        etcd --name lab --data-dir "$LAB/etcd" \
            --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
            --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
            --initial-cluster "lab=http://127.0.0.1:$((port + 1))" >"$LAB/etcd.log" 2>&1 &
        echo $! >"$LAB/etcd.pid"
        echo "$port" >"$LAB/etcd.port"
        until etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1; do sleep 0.2; done
    fi
    export ROUTED_DATASTORE
    ROUTED_DATASTORE=$(datastore_url)
    local R=target/release/routectl
    echo "==> datastore $ROUTED_DATASTORE"
    $R pool list -o json | grep -q '"name": "lab-pods"' || $R pool create lab-pods --cidr 10.244.0.0/16 --nat-outgoing
    for node in node-1 node-2 node-3; do
        for pod in 1 2; do
            $R ipam allocate --node $node --handle "$node-pod-$pod" -o json >/dev/null
        done
    done
    status
}

status() {
    export ROUTED_DATASTORE
    ROUTED_DATASTORE=$(datastore_url)
    local R=target/release/routectl
    $R pool list
    $R ipam show
    $R ipam check
}

down() {
    if [ -f "$LAB/etcd.pid" ]; then
        kill "$(cat "$LAB/etcd.pid")" 2>/dev/null || true
    fi
    rm -rf "$LAB"
    echo "lab removed ($LAB)"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status [--etcd]" >&2; exit 2 ;;
esac
