#!/usr/bin/env bash
# scripts/guest/build-initramfs.sh — owns the test guest's base initramfs: an
# uncompressed newc cpio with Debian's static busybox (every applet linked
# to it), optionally fio with the shared libraries it loads, and an /init
# that runs the test's commands and powers the guest off.
#
# Usage: scripts/guest/build-initramfs.sh [--fio]
#   Progress goes to stderr. The only line on stdout is the absolute path of
#   the cached archive:
#     ${SPLITVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/splitvm}/initramfs-<hash>/initramfs.cpio
#   <hash> covers this script and the content of every file put in the
#   archive (busybox; with --fio, fio, its libraries and the dynamic loader
#   as `ldd` finds them), so an upgraded package makes a new archive.
#   busybox-static (and fio, with --fio) must be installed.
#
# The archive needs the kernel from `scripts/guest/build-kernel.sh
# --userspace` (a `#!/bin/sh` /init, tmpfs, futexes, ...) and is meant for
# QEMU with -accel tcg; test/helpers/qemu-guest.ts boots both. A test adds
# its commands by appending a second newc archive holding /commands.sh (the
# kernel unpacks concatenated archives in order). /init then:
#   - mounts proc, sysfs, devtmpfs on /dev, tmpfs on /tmp, /run, /dev/shm;
#   - prints `SPLITVM-TEST: begin`, runs `sh -e /commands.sh` with its
#     output on the console, and prints `SPLITVM-TEST: exit=N` (N is its
#     exit status; 127 when no /commands.sh is present);
#   - syncs and calls `reboot -f`: QEMU started with -no-reboot then exits.
# /usr/share/udhcpc/default.script makes `udhcpc -i eth0` configure the
# address, the default route and /etc/resolv.conf.
set -euo pipefail
export LC_ALL=C

exec 3>&1 1>&2

log() { printf 'build-initramfs: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

with_fio=
case $# in
    0) ;;
    1) [[ $1 == --fio ]] || die "unknown argument: $1 (usage: $0 [--fio])"; with_fio=1 ;;
    *) die "usage: $0 [--fio]" ;;
esac

self=$(realpath "${BASH_SOURCE[0]}")
cache_root=$(realpath -m "${SPLITVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/splitvm}")
busybox=/bin/busybox
[[ -x $busybox ]] || die "$busybox is missing (install busybox-static)"

# Host files copied into the archive at the same path: fio and, as `ldd`
# lists them, its libraries and the dynamic loader.
files=()
if [[ -n $with_fio ]]; then
    fio=$(command -v fio) || die "fio is missing (install fio)"
    files+=("$fio")
    while read -r path; do
        files+=("$path")
    done < <(ldd "$fio" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
fi

hash=$({
    printf '== build-initramfs.sh\n'; cat "$self"
    printf '== files\n'; sha256sum "$busybox" "${files[@]}"
} | sha256sum | cut -c1-16)
out="$cache_root/initramfs-$hash"
if [[ -f $out/initramfs.cpio ]]; then
    printf '%s\n' "$out/initramfs.cpio" >&3
    exit 0
fi

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/.initramfs-$hash.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
log "building initramfs-$hash${with_fio:+ (with fio and ${#files[@]} files)}"

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,mnt,root,usr/share/udhcpc}
cp "$busybox" "$root/bin/busybox"
# Every applet as a relative symlink to /bin/busybox (what `busybox
# --install -s` does, without paying for it at each boot).
while read -r applet; do
    [[ $applet == bin/busybox ]] && continue
    rel=$(realpath -m --relative-to="$root/$(dirname "$applet")" "$root/bin/busybox")
    ln -sfn "$rel" "$root/$applet"
done < <("$busybox" --list-full)
for f in "${files[@]}"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
done

cat >"$root/init" <<'EOF'
#!/bin/sh
# The test guest's /init (scripts/guest/build-initramfs.sh).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1
echo "SPLITVM-TEST: begin"
if [ -f /commands.sh ]; then
    sh -e /commands.sh
    status=$?
else
    echo "no /commands.sh in the initramfs"
    status=127
fi
echo "SPLITVM-TEST: exit=$status"
sync
reboot -f
EOF
chmod 0755 "$root/init"

cat >"$root/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc's hook (scripts/guest/build-initramfs.sh): applies the lease.
case $1 in
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        ;;
esac
exit 0
EOF
chmod 0755 "$root/usr/share/udhcpc/default.script"

# Reproducible: fixed times, owner root, inode numbers from 1.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) >"$work/initramfs.cpio"
log "initramfs.cpio: $(stat -c %s "$work/initramfs.cpio") bytes"

rm -rf "$root"
chmod 0755 "$work"
if ! mv -T "$work" "$out" 2>/dev/null; then
    [[ -f $out/initramfs.cpio ]] || die "cannot move the archive into $out"
    log "built meanwhile by another run"
fi
printf '%s\n' "$out/initramfs.cpio" >&3
