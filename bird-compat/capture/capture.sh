#!/usr/bin/env bash
# Captures the golden replies of bird-compat's renderers from real BIRD daemons.
#
#   sudo bird-compat/capture/capture.sh            # both dialects
#   sudo bird-compat/capture/capture.sh bird2      # BIRD 2.0 (Debian bird2, installed)
#   sudo bird-compat/capture/capture.sh bird1      # BIRD 1.6 (Debian bird, unpacked to a temp dir:
#                                                  # the package conflicts with bird2)
#
# Scenario (the one bird-compat's golden tests render): two nodes in two network namespaces on a
# veth, 10.0.0.1 (AS 64512, "node A", whose socket is captured) and 10.0.0.2. A has the
# Calico-named iBGP session Mesh_10_0_0_2 to B (Established, BFD on) and an eBGP session
# Global_10_0_0_254 (AS 64513) to an address of B where nothing listens (Active, "Connection
# refused"). A originates 10.244.1.0/26, B 10.244.2.0/26 (blackhole statics, as Calico does).
# Raw replies (codes, continuation lines, trailing spaces) land in
# bird-compat/tests/golden/<dialect>/<command>.txt; birdsock.py is the raw client.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
golden="$here/../tests/golden"
tmp="$(mktemp -d /tmp/birdcap.XXXXXX)"
nsa="birdcap-a-$$"; nsb="birdcap-b-$$"
cleanup() {
    for p in "$tmp"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
    ip netns del "$nsa" 2>/dev/null || true
    ip netns del "$nsb" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$nsa"; ip netns add "$nsb"
ip link add capa type veth peer name capb
ip link set capa netns "$nsa"; ip link set capb netns "$nsb"
ip -n "$nsa" addr add 10.0.0.1/24 dev capa
ip -n "$nsb" addr add 10.0.0.2/24 dev capb
ip -n "$nsb" addr add 10.0.0.254/32 dev lo
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set capa up; ip -n "$nsb" link set capb up

# conf DIALECT SELF PEER OWN_BLOCK: one node's config.
conf() {
    local dialect=$1 self=$2 peer=$3 block=$4 peername="Mesh_${3//./_}"
    echo "router id $self;"
    if [ "$dialect" = bird1 ]; then
        echo "listen bgp address $self;"
        echo "protocol device device1 { scan time 10; }"
        echo "protocol kernel kernel1 { learn; persist; scan time 10; import all; export none; }"
        echo "protocol static static1 { route $block blackhole; }"
        echo "protocol bfd bfd1 { }"
        local ch="import all; export all;"
    else
        echo "protocol device device1 { scan time 10; }"
        echo "protocol kernel kernel1 { learn; persist; scan time 10; ipv4 { import all; export none; }; }"
        echo "protocol static static1 { ipv4; route $block blackhole; }"
        echo "protocol bfd bfd1 { }"
        local ch="ipv4 { import all; export all; }; strict bind yes;"
    fi
    echo "protocol bgp $peername { local $self as 64512; neighbor $peer as 64512; direct; bfd on; $ch }"
    if [ "$self" = 10.0.0.1 ]; then
        echo "protocol bgp Global_10_0_0_254 { local $self as 64512; neighbor 10.0.0.254 as 64513; $ch }"
    fi
}

# wait_for SOCKET TEXT COMMAND: polls until COMMAND's reply contains TEXT (bounded).
wait_for() {
    local sock=$1 text=$2 cmd=$3
    for _ in $(seq 1 120); do
        if python3 "$here/birdsock.py" "$sock" "$tmp" "probe=$cmd" 2>/dev/null \
            && grep -q "$text" "$tmp/probe.txt"; then return 0; fi
        sleep 0.5
    done
    echo "timeout waiting for '$text' in '$cmd'" >&2; exit 1
}

capture() {
    local dialect=$1 bird=$2
    conf "$dialect" 10.0.0.1 10.0.0.2 10.244.1.0/26 >"$tmp/a.conf"
    conf "$dialect" 10.0.0.2 10.0.0.1 10.244.2.0/26 >"$tmp/b.conf"
    ip netns exec "$nsb" "$bird" -c "$tmp/b.conf" -s "$tmp/b.ctl" -P "$tmp/b.pid"
    ip netns exec "$nsa" "$bird" -c "$tmp/a.conf" -s "$tmp/a.ctl" -P "$tmp/a.pid"
    wait_for "$tmp/a.ctl" "Established" "show protocols Mesh_10_0_0_2"
    wait_for "$tmp/a.ctl" "10.244.2.0/26" "show route"
    wait_for "$tmp/a.ctl" "Connection refused" "show protocols Global_10_0_0_254"
    wait_for "$tmp/a.ctl" " Up " "show bfd sessions"
    mkdir -p "$golden/$dialect"
    python3 "$here/birdsock.py" "$tmp/a.ctl" "$golden/$dialect" \
        "show_status=show status" \
        "show_protocols=show protocols" \
        "show_protocols_all=show protocols all" \
        "show_protocols_all_mesh=show protocols all Mesh_10_0_0_2" \
        "show_protocols_all_nosuch=show protocols all Nosuch_1" \
        "show_route=show route" \
        "show_route_all=show route all" \
        "show_route_for=show route for 10.244.2.1" \
        "show_route_for_missing=show route for 192.0.2.1" \
        "show_route_protocol=show route protocol Mesh_10_0_0_2" \
        "show_route_count=show route count" \
        "show_bfd_sessions=show bfd sessions" \
        "syntax_error=show frobnicate"
    kill "$(cat "$tmp/a.pid")" "$(cat "$tmp/b.pid")"
    rm -f "$tmp/a.pid" "$tmp/b.pid"
    sleep 1
}

want=${1:-all}
if [ "$want" = all ] || [ "$want" = bird2 ]; then capture bird2 /usr/sbin/bird; fi
if [ "$want" = all ] || [ "$want" = bird1 ]; then
    (cd "$tmp" && apt-get download bird >/dev/null 2>&1 && dpkg-deb -x bird_*.deb root)
    capture bird1 "$tmp/root/usr/sbin/bird"
fi
echo "captured into $golden"
