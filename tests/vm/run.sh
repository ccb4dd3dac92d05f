#!/usr/bin/env bash
# Runs one command inside a throw-away qemu VM that boots Debian's linux-image-amd64 kernel, for
# the tests this machine's kernel cannot run (it has no ipip module). The VM sees this machine's
# whole filesystem read-only (9p), so the built routed binaries, iproute2, BIRD, etcd and tcpdump
# are the host's own; /tmp, /run, /var/lib are fresh tmpfs inside the VM. The repository, the
# current directory, ROUTED_BIN_DIR and CARGO_TARGET_DIR are also shared on their own (read-only,
# at the same paths), so they are visible even when they live under /tmp.
#
#   tests/vm/run.sh [--mem MiB] [--smp N] [--timeout SECONDS] [--out DIR] [--] CMD [ARG...]
#
# CMD runs with bash in a chroot of the host's /, in the current directory, as root, with PATH,
# RUST_* and ROUTED_* copied from this environment and ROUTED_VM=1, ROUTED_VM_OUT=<dir> set.
# ROUTED_VM_OUT is a read-write share: --out DIR on the host (default: a temporary directory
# removed at the end). Output appears on stdout as the command prints it (serial console); the
# script exits with the command's exit status, or 124 when the VM timed out, 125 when the VM
# could not run the command.
#
# Environment:
#   ROUTED_VM_CACHE   kernel + initramfs cache (default /var/cache/routed-vm)
#   ROUTED_VM_ACCEL   auto (default: KVM when /dev/kvm works, else TCG), kvm or tcg
#   ROUTED_VM_KERNEL  a kernel package to use instead of linux-image-amd64's dependency
#   ROUTED_VM_MODULES extra modules to load at boot (space separated)
#   ROUTED_VM_TIMEOUT default for --timeout (900 s)
#   ROUTED_VM_SHARE   more host directories to share at the same paths (space separated)
#
# Packages it installs when missing (apt-get): qemu-system-x86, busybox-static; the kernel package
# is only downloaded and unpacked into the cache, never installed on the host.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mem=2048
smp=2
timeout_s=${ROUTED_VM_TIMEOUT:-900}
out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || { sed -n '2,/^set -e/p' "$0" | grep '^#' >&2; exit 2; }

log() { echo "routed-vm: $*" >&2; }
cache=${ROUTED_VM_CACHE:-/var/cache/routed-vm}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Modules loaded at boot (with their dependencies): virtio PCI + 9p for the shares, and what the
# namespace labs use. Modules of the whole netfilter tree are also in the initramfs, unloaded, so
# nft (and anything else that asks the kernel) loads them on demand.
preload="crc32c_generic virtio_pci 9pnet_virtio 9p ipip tunnel4 ip_tunnel veth bridge dummy vxlan nf_tables
nft_chain_nat nft_ct nft_masq nf_nat nf_conntrack ${ROUTED_VM_MODULES:-}"
ondemand_dirs="kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter kernel/net/sched"

# --- packages ---------------------------------------------------------------------------------
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
# The initramfs has no C library: it needs the static busybox (the busybox package is dynamic).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
fi
bb=/bin/busybox

$SUDO mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9 # one setup at a time; released before qemu starts

# --- kernel -----------------------------------------------------------------------------------
kpkg=${ROUTED_VM_KERNEL:-}
if [ -z "$kpkg" ]; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}') || true
fi
if [ -z "$kpkg" ]; then
    # apt knows no linux-image-amd64 (no package lists): use the newest kernel already cached.
    kpkg=$(ls -d "$cache"/linux-image-* 2>/dev/null | sort -V | tail -1 | xargs -r -n1 basename) || true
    [ -n "$kpkg" ] || { $SUDO apt-get update -q >&2; kpkg=$(apt-cache depends linux-image-amd64 |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
fi
[ -n "$kpkg" ] || { log "cannot resolve linux-image-amd64 to a kernel package"; exit 125; }
kdir=$cache/$kpkg
if [ ! -f "$kdir/.unpacked" ]; then
    log "downloading $kpkg"
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    (cd "$tmp" && apt-get download "$kpkg" >&2) || { $SUDO apt-get update -q >&2 && (cd "$tmp" && apt-get download "$kpkg" >&2); }
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg-deb -x "$tmp"/*.deb "$kdir"
    rm -rf "$tmp"
    touch "$kdir/.unpacked"
fi
kver=$(ls "$kdir/lib/modules" | head -1)
vmlinuz=$kdir/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || { log "no kernel image in $kdir"; exit 125; }
if [ ! -f "$kdir/lib/modules/$kver/modules.dep" ]; then
    $bb depmod -b "$kdir" "$kver"
fi

# --- initramfs --------------------------------------------------------------------------------
key=$(printf '%s\n%s\n%s\n' "$kver" "$preload" "$ondemand_dirs" | cat - "$here/init.sh" "$0" | sha256sum | cut -c1-16)
initrd=$cache/initramfs-$kver-$key.cpio.gz
if [ ! -f "$initrd" ]; then
    log "building $initrd"
    rm -f "$cache/initramfs-$kver-"*.cpio.gz # older builds of this script
    stage=$(mktemp -d "$cache/stage.XXXXXX")
    mkdir -p "$stage"/{bin,sbin,proc,sys,dev,mnt,lib/modules/"$kver"}
    cp "$bb" "$stage/bin/busybox"
    for applet in $($bb --list); do [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"; done
    ln -sf ../bin/busybox "$stage/sbin/modprobe"
    install -m 0755 "$here/init.sh" "$stage/init"
    mdir=$kdir/lib/modules/$kver
    # Module files: each preloaded module and everything under the on-demand directories, plus
    # their dependencies (modules.dep lists them transitively).
    wanted=$(mktemp)
    for m in $preload; do
        pat=$(echo "$m" | sed 's/[-_]/[-_]/g')
        line=$(grep -E "(^|/)$pat\.ko(\.[a-z]+)?:" "$mdir/modules.dep" | head -1) || true
        [ -n "$line" ] || { grep -qw "$m" "$mdir/modules.builtin" 2>/dev/null && continue; log "module $m not in $kpkg"; exit 125; }
        echo "$line" | tr -d ':' | tr ' ' '\n' >>"$wanted"
    done
    for d in $ondemand_dirs; do
        grep -E "^$d/" "$mdir/modules.dep" | tr -d ':' | tr ' ' '\n' >>"$wanted" || true
    done
    sort -u "$wanted" | grep . | while read -r f; do
        mkdir -p "$stage/lib/modules/$kver/$(dirname "$f")"
        cp "$mdir/$f" "$stage/lib/modules/$kver/$f"
    done
    rm -f "$wanted"
    cp "$mdir"/modules.builtin* "$mdir/modules.order" "$stage/lib/modules/$kver/" 2>/dev/null || true
    $bb depmod -b "$stage" "$kver"
    echo "$preload" | tr ' ' '\n' | grep . >"$stage/modules.preload"
    (cd "$stage" && find . | $bb cpio -o -H newc 2>/dev/null | gzip -1) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$stage"
fi
flock -u 9

# --- the command ------------------------------------------------------------------------------
run=$(mktemp -d /tmp/routed-vm.XXXXXX)
qpid=""
cleanup() {
    [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
share=$run/share
mkdir -p "$share/out"
if [ -n "$out" ]; then
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
else
    out=$run/out
    mkdir -p "$out"
fi
# Extra read-only shares, each mounted inside the VM at its own absolute path after the tmpfs
# layers, so a working tree or a target directory under /tmp (a CI clone) is visible there: the
# repository holding this script, the current directory, ROUTED_BIN_DIR, CARGO_TARGET_DIR and
# ROUTED_VM_SHARE (space-separated paths). A path inside another one is not shared twice.
abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
candidates=("$(cd "$here/../.." && pwd)" "$PWD")
[ -n "${ROUTED_BIN_DIR:-}" ] && candidates+=("$(abspath "$ROUTED_BIN_DIR")")
[ -n "${CARGO_TARGET_DIR:-}" ] && candidates+=("$(abspath "$CARGO_TARGET_DIR")")
for p in ${ROUTED_VM_SHARE:-}; do candidates+=("$(abspath "$p")"); done
extra=() # absolute paths, shortest first
while read -r p; do
    [ -d "$p" ] || continue
    [ "$p" = / ] && continue
    covered=""
    for q in "${extra[@]}"; do case "$p/" in "$q"/*) covered=1 ;; esac; done
    [ -n "$covered" ] || extra+=("$p")
done < <(for p in "${candidates[@]}"; do
    # Normalise (no trailing slash, no /./ or /../) without resolving symlinks.
    p=$(realpath -s -m "$p") && printf '%s\t%s\n' "${#p}" "$p"
done | sort -n -u | cut -f2-)
: >"$share/mounts"
for i in "${!extra[@]}"; do printf 'x%d %s\n' "$i" "${extra[$i]}" >>"$share/mounts"; done
{
    echo "cd $(printf '%q' "$PWD") || exit 125"
    echo "export HOME=/root ROUTED_VM=1 ROUTED_VM_OUT=/run/routed-vm/out"
    echo "export PATH=$(printf '%q' "$PATH")"
    export -p | grep -E '^declare -x (RUST_[A-Z_]+|ROUTED_[A-Z0-9_]+)=' |
        grep -vE '^declare -x ROUTED_VM_[A-Z_]+=' || true
    printf '%q ' "$@"
    echo
} >"$share/cmd"

# --- qemu -------------------------------------------------------------------------------------
boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
accel=${ROUTED_VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
    accel=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -f "$cache/kvm-broken.$boot_id" ]; then accel=kvm; fi
fi

extra_args=()
for i in "${!extra[@]}"; do
    # qemu's option syntax: a comma inside a value is written twice.
    extra_args+=(-virtfs "local,path=${extra[$i]//,/,,},mount_tag=x$i,security_model=none,readonly=on,multidevs=remap")
done

# Boots the VM with accelerator $1 in the background; the console goes to $run/console.
boot() {
    local cpu=max
    [ "$1" = kvm ] && cpu=host
    : >"$run/console"
    timeout -k 10 "$timeout_s" qemu-system-x86_64 -accel "$1" -cpu "$cpu" -m "$mem" -smp "$smp" \
        -nographic -no-reboot -nic none \
        -kernel "$vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3" \
        -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
        -virtfs "local,path=$share,mount_tag=routedvm,security_model=none,multidevs=remap" \
        -virtfs "local,path=$out,mount_tag=routedout,security_model=none,multidevs=remap" \
        "${extra_args[@]}" </dev/null >"$run/console" 2>&1 &
    qpid=$!
    shown=0
    started=$(date +%s)
}

# Prints what the console gained since the last call, without the serial line's carriage returns.
show_new() {
    local size
    size=$(stat -c %s "$run/console")
    if [ "$size" -gt "$shown" ]; then
        tail -c +"$((shown + 1))" "$run/console" | head -c "$((size - shown))" | tr -d '\r'
        shown=$size
    fi
}

log "booting $kver with $accel, $mem MiB, $smp CPUs"
boot "$accel"
init_seen=""
while :; do
    alive=1
    kill -0 "$qpid" 2>/dev/null || alive=0
    show_new
    if [ -z "$init_seen" ] && grep -aq ROUTED-VM-INIT "$run/console"; then
        init_seen=1
        log "init started after $(($(date +%s) - started)) s"
    fi
    if [ -z "$init_seen" ] && [ "$accel" = kvm ] &&
        { [ "$alive" = 0 ] || [ $(($(date +%s) - started)) -gt 60 ]; }; then
        # Some nested-virtualisation hosts offer /dev/kvm but qemu aborts on it (MSRs it cannot
        # set) or the guest never gets past the boot loader. Remember that until this host
        # reboots and fall back to software emulation.
        log "KVM does not work here (qemu ended or no guest after 60 s); retrying with TCG"
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        touch "$cache/kvm-broken.$boot_id" 2>/dev/null || true
        accel=tcg
        boot tcg
        continue
    fi
    [ "$alive" = 1 ] || break
    sleep 0.5
done
qrc=0
wait "$qpid" 2>/dev/null || qrc=$?
qpid=""
show_new
status=$(tr -d '\r' <"$run/console" | sed -n 's/^ROUTED-VM-EXIT \([0-9]*\)$/\1/p' | tail -1)
log "VM finished after $(($(date +%s) - started)) s ($accel)"
if [ -z "$status" ]; then
    if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
        log "timed out after $timeout_s s"
        exit 124
    fi
    log "the VM ended (qemu status $qrc) without reporting the command's exit status"
    exit 125
fi
exit "$status"
