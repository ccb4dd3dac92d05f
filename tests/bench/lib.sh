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
