# Shared by the benchmark scripts (sourced, not run): prerequisites, binaries, the work
# directory and the namespaces and processes a run starts, removed on exit; timestamps.
#   bench_require "apt-get install HINT" PROGRAM...   exit 1 naming the first one missing
#   bench_bins BIN...        B = ROUTED_BIN_DIR, or a release build of BIN... (target/release)
#   bench_setup              work=$(mktemp -d), pids=(), namespaces=(), cleanup on EXIT
#                            (KEEP=1 keeps $work); add to pids and namespaces as you start
#   add_ns NAME, ns NAME CMD..., now, log MSG
#   epoch_after EPOCH        reads `[timestamp] ...` lines (ip -ts monitor) on stdin and
#                            prints the epoch of the first at or after EPOCH

bench_require() {
    local hint=$1 p
    shift
    for p in "$@"; do
        command -v "$p" >/dev/null || [ -x "$p" ] || { echo "missing $p ($hint)" >&2; exit 1; }
    done
}

bench_bins() {
    if [ -z "${ROUTED_BIN_DIR:-}" ]; then
        local args=() b
        for b in "$@"; do args+=(--bin "$b"); done
        cargo build --release --quiet "${args[@]}"
        B=$PWD/target/release
    else
        B=$ROUTED_BIN_DIR
    fi
}

bench_cleanup() {
    local pid n
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 && return
    rm -rf "$work"
}

bench_setup() {
    work=$(mktemp -d)
    pids=()
    namespaces=()
    trap bench_cleanup EXIT
}

add_ns() { ip netns add "$1"; namespaces+=("$1"); ip -n "$1" link set lo up; }
ns() { local n=$1; shift; ip netns exec "$n" "$@"; }
now() { date +%s.%N; }
log() { echo "[$(date -u +%T)] $*" >&2; }

epoch_after() {
    local ts rest e
    while read -r ts rest; do
        ts=${ts#[}
        ts=${ts%]}
        e=$(date -d "$ts" +%s.%N)
        if awk -v e="$e" -v a="$1" 'BEGIN { exit !(e >= a) }'; then
            echo "$e"
            break
        fi
    done
}

# The convergence benchmarks (convergence.sh, rr_convergence.sh) name node J of variant V
# "$P-$V-nJ" and log its `ip -ts monitor route` to "$work/V-mon-J.log".

# route_seen_at LOG BLOCK EPOCH: the epoch of the first monitor line at or after EPOCH that
# adds a route to BLOCK.
route_seen_at() { grep -F " $2 " "$1" | grep -v "Deleted" | epoch_after "$3"; }

block_of() { # 10.245.3.7 -> 10.245.3.0/26
    local IFS=.
    read -r a b c d <<<"$1"
    echo "$a.$b.$c.$((d / 64 * 64))/26"
}

# record_reach V K BLOCK TSTART T0 FROM NODE...: waits (30 s at most per node) until BLOCK is in
# the kernel of every NODE but FROM, and appends the slowest, in ms after T0 (the ADD's return,
# never below 0) and after TSTART (its start), to $work/V.ms and $work/V.start.ms.
record_reach() {
    local v=$1 k=$2 block=$3 tstart=$4 t0=$5 from=$6 j seen deadline worst=0 worst_start=0
    shift 6
    for j in "$@"; do
        [ "$from" = "$j" ] && continue
        seen="" deadline=$((SECONDS + 30))
        while [ -z "$seen" ]; do
            seen=$(route_seen_at "$work/$v-mon-$j.log" "$block" "$tstart")
            [ -n "$seen" ] && break
            [ $SECONDS -ge $deadline ] && { echo "$v trial $k: $block never reached node-$j" >&2; exit 1; }
            sleep 0.05
        done
        worst=$(awk -v s="$seen" -v t="$t0" -v w="$worst" 'BEGIN { d = (s - t) * 1000; if (d < 0) d = 0; print (d > w ? d : w) }')
        worst_start=$(awk -v s="$seen" -v t="$tstart" -v w="$worst_start" 'BEGIN { d = (s - t) * 1000; print (d > w ? d : w) }')
    done
    echo "$worst" >>"$work/$v.ms"
    echo "$worst_start" >>"$work/$v.start.ms"
}

# wait_withdrawn V K BLOCK FROM NODE...: waits (30 s at most in all) until no NODE but FROM
# routes BLOCK.
wait_withdrawn() {
    local v=$1 k=$2 block=$3 from=$4 j deadline=$((SECONDS + 30))
    shift 4
    for j in "$@"; do
        [ "$from" = "$j" ] && continue
        while ip -n "$P-$v-n$j" route show "$block" | grep -q .; do
            [ $SECONDS -ge $deadline ] && { echo "$v trial $k: $block not withdrawn from node-$j" >&2; exit 1; }
            sleep 0.05
        done
    done
}

stats() { # p50 p99 mean max of a file of numbers
    sort -n "$1" | awk '{ a[NR] = $1; s += $1 } END {
        p50 = a[int((NR * 50 + 99) / 100)]; p99 = a[int((NR * 99 + 99) / 100)];
        printf "%.1f %.1f %.1f %.1f\n", p50, p99, s / NR, a[NR] }'
}

row() { # row LABEL FILE: a markdown row of FILE's stats
    local p50 p99 mean max
    read -r p50 p99 mean max < <(stats "$2")
    echo "| $1 | $p50 | $p99 | $mean | $max |"
}
