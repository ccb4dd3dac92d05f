#!/usr/bin/env bash
# Smoke test of the VM harness, run inside the VM (tests/vm/run.sh tests/vm/smoke.sh): proves the
# guest kernel has IPIP and that namespaces, veths and tcpdump work there. Two hosts on two subnets
# joined by a router namespace that knows only the two subnets; each host gives its tunl0 an
# address from 10.244.0.0/16 and routes the other host's /24 `via <host> dev tunl0 onlink`, as
# routed does. Pings between the tunnel addresses can only cross the router encapsulated.
# Prints PASS/FAIL lines; exits non-zero when anything failed.
set -u
[ "${ROUTED_VM:-}" = 1 ] || { echo "FAIL smoke: run me inside the VM: tests/vm/run.sh $0"; exit 1; }

failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { # check NAME CMD... : PASS when CMD succeeds
    local name=$1
    shift
    local out
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name: $* -> $out"; fi
}

suffix=$$
a=smoke-a-$suffix r=smoke-r-$suffix b=smoke-b-$suffix
cleanup() { for ns in "$a" "$r" "$b"; do ip netns del "$ns" 2>/dev/null; done; }
trap cleanup EXIT

grep -qw '^ipip' /proc/modules && pass "ipip module loaded ($(uname -r))" || fail "ipip not in /proc/modules"

for ns in "$a" "$r" "$b"; do ip netns add "$ns" && ip -n "$ns" link set lo up; done
ip -n "$r" link add ra type veth peer name eth0 netns "$a"
ip -n "$r" link add rb type veth peer name eth0 netns "$b"
ip -n "$r" addr add 10.1.0.254/24 dev ra
ip -n "$r" addr add 10.2.0.254/24 dev rb
ip -n "$r" link set ra up
ip -n "$r" link set rb up
ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
ip -n "$a" addr add 10.1.0.1/24 dev eth0
ip -n "$b" addr add 10.2.0.1/24 dev eth0
for ns in "$a" "$b"; do
    ip -n "$ns" link set eth0 up
done
ip -n "$a" route add default via 10.1.0.254
ip -n "$b" route add default via 10.2.0.254
check "underlay: host a reaches host b through the router" ip netns exec "$a" ping -c 1 -W 2 10.2.0.1

# tunl0 exists in every namespace once ipip is loaded (fb_tunnels_only_for_init_net=0).
check "tunl0 in host a" ip -n "$a" link show tunl0
ip -n "$a" link set tunl0 mtu 1480 up
ip -n "$b" link set tunl0 mtu 1480 up
ip -n "$a" addr add 10.244.1.1/32 dev tunl0
ip -n "$b" addr add 10.244.2.1/32 dev tunl0
ip -n "$a" route add 10.244.2.0/24 via 10.2.0.1 dev tunl0 onlink
ip -n "$b" route add 10.244.1.0/24 via 10.1.0.1 dev tunl0 onlink
# Without the tunnel the router drops 10.244/16 (it has no route for it).
ip -n "$r" route add unreachable 10.244.0.0/16

cap=$(mktemp)
ip netns exec "$r" timeout 30 tcpdump -l -n -i ra -c 2 'ip proto 4' >"$cap" 2>/dev/null &
tcpdump_pid=$!
sleep 2 # tcpdump needs a moment to attach; the capture below waits for its packets anyway
check "ping across the IPIP tunnel (a -> b)" ip netns exec "$a" ping -c 3 -W 2 -I 10.244.1.1 10.244.2.1
wait "$tcpdump_pid"
if grep -q 'IP 10.1.0.1 > 10.2.0.1: IP 10.244.1.1 > 10.244.2.1: ICMP echo request' "$cap"; then
    pass "router saw the ping encapsulated (protocol 4, outer 10.1.0.1 > 10.2.0.1)"
else
    fail "no IPIP packet on the router leg: $(cat "$cap")"
fi
rm -f "$cap"
rx=$(ip -n "$b" -s -j link show tunl0 | sed -n 's/.*"rx":{"bytes":[0-9]*,"packets":\([0-9]*\).*/\1/p')
if [ "${rx:-0}" -ge 3 ]; then pass "tunl0 of host b received $rx packets"; else fail "tunl0 rx packets: ${rx:-none}"; fi

echo "smoke: $failures failure(s)"
[ "$failures" -eq 0 ]
