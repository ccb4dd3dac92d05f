#!/usr/bin/env bash
# bgperf-style BGP benchmark (issue 4): one injector sends P peers x N unique prefixes to a target;
# time until the target's Loc-RIB holds all P*N, the target's peak RSS and CPU, and (where the
# target installs them) the time until the kernel holds them all.
#
# The injector is P BIRD 2 processes in one namespace, one eBGP peer each (AS 65001..), each from its
# own source address on the link to the target and each exporting its own N static /24s (unique per
# peer, carved from 16.0.0.0/4). The injector is passive and starts first with every route loaded,
# so each target's clock starts when the target process starts and its sessions open at once.
# Targets, one after another against the same injector, each in a fresh target namespace:
#   routed       target/release/routed (embedded SQLite store, mesh off, one global peer per
#                injector peer); Loc-RIB = sum of prefixes_received from `routectl status -o json`
#                (Adj-RIB-In; with unique prefixes per peer every one is its own best path, and the
#                speaker updates Loc-RIB in the same step); it always installs learned routes in
#                the kernel (proto 232), counted with `ip route show proto 232`.
#   bird-kernel  BIRD 2 with `protocol kernel { ipv4 { export all; }; }` (proto bird).
#   bird         BIRD 2 without a kernel protocol: Loc-RIB only (`birdc show route count`).
#   gobgp        gobgpd (no kernel): `gobgp global rib summary`.
# Peak RSS is VmHWM from /proc/PID/status, CPU is utime+stime from /proc/PID/stat, both read when
# the Loc-RIB is complete (and again when the kernel is).
#
# Usage: tests/bench/bgp.sh [SIZE...]   SIZE = PxN, default "2x100000 10x100000"
#   TARGETS="routed bird-kernel bird gobgp"  TIMEOUT=900 (s per target)  ROUTED_BIN_DIR=DIR (skip build)
# Root; not run in CI. Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(2x100000 10x100000)
TARGETS=${TARGETS:-routed bird-kernel bird gobgp}
TIMEOUT=${TIMEOUT:-900}
bench_require "apt-get install bird2 gobgpd jq iproute2" bird birdc gobgpd gobgp jq ip
bench_bins routed routectl
HZ=$(getconf CLK_TCK)
bench_setup
tag=$$
NS=rbg$((tag % 10000))
INJ=$NS-inj
NET=10.80.0
INJ_PIDS=()
cpu_s() { awk -v hz="$HZ" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
hwm_mb() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# The N static /24s of injector peer I (1-based): consecutive /24s from 16.0.0.0 on.
gen_statics() { # gen_statics I N
    awk -v i="$1" -v n="$2" 'BEGIN {
        base = 16 * 65536 + (i - 1) * n
        for (k = 0; k < n; k++) {
            x = base + k
            printf "  route %d.%d.%d.0/24 blackhole;\n", int(x / 65536), int(x / 256) % 256, x % 256
        }
    }'
}

start_injector() { # start_injector P N
    local P=$1 N=$2
    ip netns add "$INJ"
    namespaces+=("$INJ")
    ip -n "$INJ" link set lo up
    # The injector's addresses live on a bridge; each target namespace plugs a veth into it.
    ip -n "$INJ" link add br0 type bridge
    for i in $(seq 1 "$P"); do ip -n "$INJ" addr add "$NET.$((10 + i))/24" dev br0; done
    # A port that stays, so the bridge keeps its carrier while targets come and go.
    ip -n "$INJ" link add ka0 type veth peer name ka1
    ip -n "$INJ" link set ka0 master br0 up
    ip -n "$INJ" link set ka1 up
    ip -n "$INJ" link set br0 up
    # One BIRD per injector peer, each listening on its own address only (strict bind): BIRD
    # 2.0.12 with several passive protocols to one neighbour answers on one of them only.
    local i
    for i in $(seq 1 "$P"); do
        {
            echo "router id $NET.$((10 + i));"
            echo "protocol device { }"
            echo "protocol static s$i { ipv4;"
            gen_statics "$i" "$N"
            echo "}"
            echo "protocol bgp inj$i { local $NET.$((10 + i)) as $((65000 + i)); neighbor $NET.1 as 64512;"
            echo "  passive on; strict bind on; hold time 240; error wait time 1, 5;"
            echo "  ipv4 { import none; export where proto = \"s$i\"; }; }"
        } >"$work/inj$i.conf"
        ip netns exec "$INJ" bird -f -c "$work/inj$i.conf" -s "$work/inj$i.ctl" >"$work/inj$i.out" 2>&1 &
        pids+=($!)
        INJ_PIDS+=($!)
    done
    local deadline=$((SECONDS + 600))
    for i in $(seq 1 "$P"); do
        until [ "$(birdc -s "$work/inj$i.ctl" show route count 2>/dev/null | awk '/routes/ { print $1; exit }')" = "$N" ]; do
            [ $SECONDS -ge $deadline ] && { echo "injector $i did not load its routes" >&2; exit 1; }
            sleep 1
        done
    done
    log "injector up: $P peers x $N routes"
}

stop_injector() {
    local pid
    for pid in "${INJ_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    INJ_PIDS=()
    ip netns del "$INJ"
}

# A fresh target namespace, linked to the injector: target $NET.1, injector peers $NET.11...
make_target_ns() { # make_target_ns NAME P
    local t=$1 P=$2
    ip netns add "$t"
    namespaces+=("$t")
    ip -n "$t" link set lo up
    ip -n "$t" link add eth0 type veth peer name "${t##*-}" netns "$INJ"
    ip -n "$t" addr add "$NET.1/24" dev eth0
    ip -n "$t" link set eth0 up
    ip -n "$INJ" link set "${t##*-}" master br0 up
}

# Loc-RIB and kernel counts, per target.
rib_count() { # rib_count TARGET
    case $1 in
    routed) "$B/routectl" status --socket "$work/routed.sock" -o json 2>/dev/null |
        jq '[.[].prefixes_received] | add // 0' 2>/dev/null || echo 0 ;;
    bird*) birdc -s "$work/$1.ctl" show route count 2>/dev/null | awk '/ routes/ { print $1; exit }' ;;
    gobgp) ns "$TNS" gobgp global rib summary -a ipv4 2>/dev/null |
        awk '/Destination:/ { gsub(",", ""); print $2; exit }' ;;
    esac
}
# Prefixes in the namespace's main FIB trie, from /proc/net/fib_triestat: a walk of the trie in
# the kernel, milliseconds at 1M routes (`ip route show | wc -l` takes seconds there, which
# would blur the timing). The target's own routes are the count minus the count before it started.
fib_prefixes() { ip netns exec "$TNS" awk '/^Main:/ { m = 1 } m && /Prefixes:/ { print $2; exit }' /proc/net/fib_triestat; }
kernel_count() { # kernel_count TARGET
    case $1 in
    routed | bird-kernel) echo $(($(fib_prefixes) - FIB_BASE)) ;;
    *) echo 0 ;;
    esac
}

run_target() { # run_target TARGET P N -> one result line in $work/results
    local t=$1 P=$2 N=$3 total=$(($2 * $3))
    case $t in routed) TNS=$NS-rtd ;; bird) TNS=$NS-bird ;; bird-kernel) TNS=$NS-bk ;; gobgp) TNS=$NS-gob ;; esac
    make_target_ns "$TNS" "$P"
    FIB_BASE=$(fib_prefixes)
    local pid t0
    case $t in
    routed)
        local ds="sqlite://$work/routed-$P-$N.db"
        "$B/routectl" --datastore "$ds" config set --mesh off >/dev/null
        for i in $(seq 1 "$P"); do
            "$B/routectl" --datastore "$ds" peer create "inj$i" --peer-ip "$NET.$((10 + i))" \
                --as $((65000 + i)) >/dev/null
        done
        t0=$(now)
        ip netns exec "$TNS" "$B/routed" --node-name t --datastore "$ds" --ip "$NET.1/24" \
            --socket "$work/routed.sock" --no-forward-rules >"$work/routed-$P-$N.log" 2>&1 &
        pid=$!
        ;;
    bird | bird-kernel)
        {
            echo "router id $NET.1;"
            echo "protocol device { }"
            [ "$t" = bird-kernel ] && echo "protocol kernel { ipv4 { export all; }; }"
            for i in $(seq 1 "$P"); do
                echo "protocol bgp inj$i { local $NET.1 as 64512; neighbor $NET.$((10 + i)) as $((65000 + i));"
                echo "  hold time 240; ipv4 { import all; export none; }; }"
            done
        } >"$work/$t.conf"
        t0=$(now)
        ip netns exec "$TNS" bird -f -c "$work/$t.conf" -s "$work/$t.ctl" >"$work/$t-$P-$N.out" 2>&1 &
        pid=$!
        ;;
    gobgp)
        {
            printf '[global.config]\n  as = 64512\n  router-id = "%s.1"\n' "$NET"
            for i in $(seq 1 "$P"); do
                printf '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "%s.%d"\n    peer-as = %d\n' \
                    "$NET" $((10 + i)) $((65000 + i))
                printf '  [neighbors.timers.config]\n    hold-time = 240\n'
            done
        } >"$work/gobgp.toml"
        t0=$(now)
        ip netns exec "$TNS" gobgpd -f "$work/gobgp.toml" --log-level=warn >"$work/gobgp-$P-$N.out" 2>&1 &
        pid=$!
        ;;
    esac
    pids+=("$pid")
    local deadline=$((SECONDS + TIMEOUT)) rib=0 kern=0 t_est="" t_rib="" t_kern="" cpu_rib="" hwm_rib=""
    local want_kernel=0
    [ "$t" = routed ] || [ "$t" = bird-kernel ] && want_kernel=1
    while :; do
        kill -0 "$pid" 2>/dev/null || { echo "$t died; see $work" >&2; KEEP=1; exit 1; }
        if [ -z "$t_rib" ]; then
            rib=$(rib_count "$t" || true)
            rib=${rib:-0}
            if [ "$rib" -ge "$total" ]; then
                t_rib=$(now)
                cpu_rib=$(cpu_s "$pid")
                hwm_rib=$(hwm_mb "$pid")
                log "$t ${P}x$N: Loc-RIB complete"
            fi
        fi
        if [ "$want_kernel" = 1 ] && [ -z "$t_kern" ]; then
            kern=$(kernel_count "$t" || true)
            kern=${kern:-0}
            if [ "$kern" -ge "$total" ]; then
                t_kern=$(now)
                log "$t ${P}x$N: kernel complete"
            fi
        fi
        [ -n "$t_rib" ] && { [ "$want_kernel" = 0 ] || [ -n "$t_kern" ]; } && break
        if [ $SECONDS -ge $deadline ]; then
            log "$t ${P}x$N: timeout (Loc-RIB $rib, kernel $kern of $total)"
            for i in $(seq 1 "$P"); do birdc -s "$work/inj$i.ctl" show protocols "inj$i" >&2 || true; done
            break
        fi
        sleep 0.2
    done
    # The moment the last injector session came up, from the injector's own "Since" (ms), read
    # before the target goes away: polling it would add a polling round to it.
    local i since e
    for i in $(seq 1 "$P"); do
        since=$(birdc -s "$work/inj$i.ctl" show protocols "inj$i" 2>/dev/null | awk -v n="inj$i" '$1 == n && /Established/ { print $5 }')
        [ -z "$since" ] && continue
        e=$(date -d "$(date +%F) $since" +%s.%N)
        if [ -z "$t_est" ] || awk -v e="$e" -v t="$t_est" 'BEGIN { exit !(e > t) }'; then t_est=$e; fi
    done
    local hwm_end cpu_end
    hwm_end=$(hwm_mb "$pid")
    cpu_end=$(cpu_s "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    ip netns del "$TNS"
    f() { [ -n "$1" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }' || echo "-"; }
    local rate="-"
    if [ -n "$t_kern" ]; then
        rate=$(awk -v n="$total" -v a="$t_kern" -v b="$t_est" 'BEGIN { printf "%.0f", n / (a - b > 0 ? a - b : 1e-9) }')
    fi
    # target P N rib_s cpu_rib hwm_rib kern_s kern_rate kern_span cpu_end hwm_end est_s
    [ -z "$t_est" ] && t_est=$t0
    # A limit reached shows as ">LIMIT(count)".
    local rib_s kern_s
    rib_s=$(f "$t_rib" "$t_est")
    [ -z "$t_rib" ] && rib_s=">${TIMEOUT}($rib)"
    kern_s=$(f "$t_kern" "$t_est")
    [ -z "$t_kern" ] && [ "$want_kernel" = 1 ] && kern_s=">${TIMEOUT}($kern)"
    echo "$t $P $N $rib_s ${cpu_rib:--} ${hwm_rib:--} $kern_s $rate - $cpu_end $hwm_end $(f "$t_est" "$t0")" \
        >>"$work/results"
}

: >"$work/results"
for size in "${SIZES[@]}"; do
    P=${size%x*}
    N=${size#*x}
    start_injector "$P" "$N"
    for t in $TARGETS; do run_target "$t" "$P" "$N"; done
    stop_injector
done

echo
echo "Run of $(date -u +%F), $(nproc) vCPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "Times in seconds from the moment the last injector session was Established (the injector's"
echo "own timestamp; \"start → up\": from the target process's start to that moment), polled every"
echo "~0.2 s plus the time a count takes (the kernel count reads /proc/net/fib_triestat). CPU ="
echo "target's utime+stime; RSS = target's VmHWM. Kernel routes/s is end to end (BGP in + install:"
echo "all routes / time from Established to the last route in the kernel)."
echo
echo "| peers x prefixes | target | start → up | Loc-RIB full | CPU at Loc-RIB | peak RSS at Loc-RIB (MB) | kernel full | kernel routes/s (end to end) | CPU at end | peak RSS at end (MB) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
while read -r t P N rib cpu hwm kern rate kspan cpu_end hwm_end est; do
    echo "| $P x $N | $t | $est | $rib | $cpu | $hwm | $kern | $rate | $cpu_end | $hwm_end |"
done <"$work/results"
echo
echo "Ratios (routed / reference; Loc-RIB time and peak RSS at Loc-RIB complete; kernel routes/s vs bird-kernel):"
echo
echo "| peers x prefixes | reference | time ratio | peak RSS ratio | CPU ratio | kernel routes/s ratio (end to end) |"
echo "|---|---|---|---|---|---|"
for size in "${SIZES[@]}"; do
    P=${size%x*}
    N=${size#*x}
    r=$(awk -v p="$P" -v n="$N" '$1 == "routed" && $2 == p && $3 == n' "$work/results")
    [ -z "$r" ] && continue
    for ref in bird bird-kernel gobgp; do
        x=$(awk -v p="$P" -v n="$N" -v t="$ref" '$1 == t && $2 == p && $3 == n' "$work/results")
        [ -z "$x" ] && continue
        awk -v r="$r" -v x="$x" -v ref="$ref" -v p="$P" -v n="$N" 'function q(a, b) { return (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b == 0) ? "-" : sprintf("%.2f", a / b) }
        BEGIN { split(r, a, " "); split(x, b, " ");
            printf "| %s x %s | %s | %s | %s | %s | %s |\n", p, n, ref, q(a[4], b[4]), q(a[6], b[6]), q(a[5], b[5]),
                (ref == "bird-kernel" ? q(a[8], b[8]) : "-") }'
    done
done
