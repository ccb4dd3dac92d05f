#!/bin/sh
# /init of the routed test VM (busybox). Built into the initramfs by tests/vm/run.sh; not run on
# the host. It loads the modules listed in /modules.preload, mounts the host's / read-only (9p tag
# "hostroot") on /mnt/host, lays writable tmpfs over the places tests write to, mounts the per-run
# share (9p tag "routedvm": the command) on /run/routed-vm and the output share (tag "routedout",
# read-write) on /run/routed-vm/out and the extra read-only shares listed in
# /run/routed-vm/mounts at their own paths, runs /run/routed-vm/cmd with bash in a chroot of the
# host tree, prints "ROUTED-VM-EXIT <status>" and powers the VM off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
dmesg -n 1
echo "ROUTED-VM-INIT $(uname -r)"

fail() {
    echo "routed-vm: $*"
    echo "ROUTED-VM-EXIT 125"
    poweroff -f
    sleep 10
}

for m in $(cat /modules.preload); do
    modprobe "$m" || echo "routed-vm: modprobe $m failed"
done
hostname routed-vm
ip link set lo up

H=/mnt/host
mkdir -p "$H"
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot "$H" ||
    fail "cannot mount the host's / over 9p (tag hostroot)"
mount -t proc proc "$H/proc" || fail "mount proc"
mount -t sysfs sysfs "$H/sys" || fail "mount sysfs"
mount -t devtmpfs devtmpfs "$H/dev" || fail "mount devtmpfs"
mkdir -p "$H/dev/pts" "$H/dev/shm" 2>/dev/null
mount -t devpts devpts "$H/dev/pts" 2>/dev/null
mount -t tmpfs tmpfs "$H/dev/shm" 2>/dev/null
# What udev would add: bash's process substitution needs /dev/fd.
ln -sf /proc/self/fd "$H/dev/fd"
ln -sf /proc/self/fd/0 "$H/dev/stdin"
ln -sf /proc/self/fd/1 "$H/dev/stdout"
ln -sf /proc/self/fd/2 "$H/dev/stderr"
mount -t tmpfs -o mode=1777 tmpfs "$H/tmp" || fail "mount /tmp"
mount -t tmpfs -o mode=755 tmpfs "$H/run" || fail "mount /run"
# /var/run is a symlink to /run on Debian; lay a tmpfs only when it is a real directory.
[ -L "$H/var/run" ] || mount -t tmpfs tmpfs "$H/var/run"
mount -t tmpfs tmpfs "$H/var/lib" || fail "mount /var/lib"
mount -t tmpfs -o mode=1777 tmpfs "$H/var/tmp" 2>/dev/null
mount -t tmpfs tmpfs "$H/root" 2>/dev/null
mkdir -p "$H/run/netns" "$H/run/routed-vm"
# The guest kernel's modules, where the host's modprobe (if any) would look for them. The kernel's
# own module loader runs /sbin/modprobe of this initramfs (busybox), which reads /lib/modules.
moddir="$H/lib/modules"
[ -d "$H/usr/lib/modules" ] && moddir="$H/usr/lib/modules"
if mount -t tmpfs tmpfs "$moddir" 2>/dev/null; then
    mkdir -p "$moddir/$(uname -r)"
    mount --bind "/lib/modules/$(uname -r)" "$moddir/$(uname -r)"
fi
mount -t 9p -o rw,trans=virtio,version=9p2000.L,msize=262144 routedvm "$H/run/routed-vm" ||
    fail "cannot mount the run share (tag routedvm)"
[ -f "$H/run/routed-vm/cmd" ] || fail "no command in the run share"
mount -t 9p -o rw,trans=virtio,version=9p2000.L,msize=262144 routedout "$H/run/routed-vm/out" ||
    fail "cannot mount the output share (tag routedout)"
# The extra shares (lines "TAG PATH" in the run share): the repository, the target directory and
# the like, each at its own path, over whatever the tmpfs layers hid.
while read -r tag path; do
    [ -n "$tag" ] || continue
    mkdir -p "$H$path" 2>/dev/null
    mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose "$tag" "$H$path" ||
        fail "cannot mount the share $tag on $path"
done <"$H/run/routed-vm/mounts"

echo "ROUTED-VM-RUN"
chroot "$H" /bin/bash /run/routed-vm/cmd
status=$?
sync
echo "ROUTED-VM-EXIT $status"
umount "$H/run/routed-vm" 2>/dev/null
poweroff -f
sleep 10
