#!/usr/bin/env bash
# scripts/host-packages.sh — owns the Debian packages splitvm needs on the
# host, and installs those missing (with sudo when not root). Run by
# `npm start`, `npm test` and CI before anything else; when nothing is
# missing it only asks dpkg and returns at once.
#   runtime: bubblewrap (device jails), util-linux (prlimit; unshare for the
#            launcher and passt of a core in its own namespace), libseccomp2,
#            passt (--net user), iproute2
#   guest build: build-essential bc bison flex libelf-dev libssl-dev cpio
#            xz-utils linux-source-6.1 (scripts/guest/build-kernel.sh)
#   tests: e2fsprogs, dnsmasq (DHCP on a tap), diod (9P clients and peer),
#          qemu-system-x86 and qemu-system-common (guest userspace under
#          TCG, qemu-storage-daemon), busybox-static and fio (its initramfs)
set -euo pipefail

packages=(bubblewrap util-linux libseccomp2 passt iproute2
          build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils linux-source-6.1
          e2fsprogs dnsmasq diod qemu-system-x86 qemu-system-common busybox-static fio)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "splitvm: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
