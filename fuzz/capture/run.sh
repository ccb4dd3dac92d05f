#!/usr/bin/env bash
# Capture what BIRD, FRR or GoBGP sends to a scripted peer (peer.py), each daemon in its own
# throwaway network namespace pair, for byte-vector tests and fuzz seeds.
#   usage: fuzz/capture/run.sh bird|frr|gobgp marker|length|update   (as root)
# marker/length/update: the bad message sent at the end to draw a NOTIFICATION. Output: one
# "TYPE hex" line per message in $CAPTURE_DIR/<daemon>.hex (default /tmp/routed-capture).
# Used on 2026-11-22 for src/bgp/packet/tests_captured.rs: bird marker, frr length, gobgp update.
set -u
D=${CAPTURE_DIR:-/tmp/routed-capture}; mkdir -p $D; HERE=$(cd "$(dirname "$0")" && pwd)
daemon=$1
ns=fzcap-$daemon-$RANDOM
pns=${ns}p
ip netns add $ns
ip netns add $pns
ip -n $ns link set lo up
ip -n $pns link set lo up
ip -n $ns link add d0 type veth peer name d1 netns $pns
ip -n $ns addr add 10.0.0.1/24 dev d0
ip -n $pns addr add 10.0.0.2/24 dev d1
ip -n $ns link set d0 up
ip -n $pns link set d1 up
pid=""
case $daemon in
bird)
  cat > $D/bird.conf <<C
router id 10.0.0.1;
protocol device { }
protocol static { ipv4; route 192.0.2.0/24 blackhole; route 198.51.100.0/24 blackhole; }
protocol bgp routed {
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 64512;
  connect retry time 2; graceful restart on;
  ipv4 { import all; export all; };
}
C
  ip netns exec $ns bird -f -c $D/bird.conf -s $D/bird.ctl -P $D/bird.pid > $D/bird.log 2>&1 &
  pid=$!
  refresh="ip netns exec $ns birdc -s $D/bird.ctl reload in routed"
  ;;
frr)
  mkdir -p $D/vty
  cat > $D/bgpd.conf <<C
frr defaults traditional
hostname frrpeer
!
router bgp 65002
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp graceful-restart
 neighbor 10.0.0.2 remote-as 64512
 neighbor 10.0.0.2 timers connect 2
 address-family ipv4 unicast
  network 192.0.2.0/24
  network 198.51.100.0/24
 exit-address-family
!
C
  ip netns exec $ns /usr/lib/frr/bgpd -f $D/bgpd.conf -i $D/bgpd.pid -Z -S -n -P 0 --vty_socket $D/vty --log stdout > $D/bgpd.log 2>&1 &
  pid=$!
  refresh="ip netns exec $ns vtysh --vty_socket $D/vty -d bgpd -c 'clear bgp ipv4 unicast 10.0.0.2 soft in'"
  ;;
gobgp)
  cat > $D/gobgpd.toml <<C
[global.config]
  as = 65003
  router-id = "10.0.0.1"
  port = 179
  local-address-list = ["10.0.0.1"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.0.2"
    peer-as = 64512
  [neighbors.timers.config]
    connect-retry = 2
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
C
  ip netns exec $ns gobgpd -f $D/gobgpd.toml -p --pprof-disable --api-hosts 127.0.0.1:50051 > $D/gobgpd.log 2>&1 &
  pid=$!
  sleep 2
  for p in 192.0.2.0/24 198.51.100.0/24; do
    for i in $(seq 50); do
      ip netns exec $ns gobgp global rib add $p >/dev/null 2>&1
      ip netns exec $ns gobgp global rib | grep -q "$p" && break
      sleep 0.2
    done
  done
  refresh="ip netns exec $ns gobgp neighbor 10.0.0.2 softresetin"
  ;;
esac
sleep 1
ip netns exec $pns python3 $HERE/peer.py 10.0.0.2 $D/$daemon.hex "$refresh" $2
kill "$pid"
wait "$pid" 2>/dev/null
ip netns del $ns
ip netns del $pns
cat $D/$daemon.hex | cut -c1-200
