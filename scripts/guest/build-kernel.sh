#!/usr/bin/env bash
# scripts/guest/build-kernel.sh — owns building the splitvm default guest:
# an uncompressed x86-64 `vmlinux` (Debian's linux-source-6.1, `make
# tinyconfig` + scripts/guest/kernel.config), the same kernel as a `bzImage`
# (for the bzImage boot test), and `initramfs.cpio` (an uncompressed newc
# cpio whose /init is scripts/guest/init.S).
#
# Usage: scripts/guest/build-kernel.sh
#   Progress goes to stderr. The only line on stdout is the absolute path of
#   the cache directory holding vmlinux, bzImage, initramfs.cpio and config (the full
#   kernel .config):
#     ${SPLITVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/splitvm}/guest-<hash>
#   <hash> is the first 16 hex digits of the sha256 of kernel.config, init.S,
#   the linux-source-6.1 package version and this script. If that directory
#   is complete the script prints it and exits at once. Otherwise it installs
#   missing build packages (apt-get), unpacks the source once into
#   <cache>/src-6.1 (later builds there are incremental), builds, and moves
#   the result into place atomically. A lock (flock) on <cache>/build.lock
#   makes concurrent runs wait for one another instead of building twice.
#
# >>> userspace variant
# Usage: scripts/guest/build-kernel.sh --userspace
#   Builds the test guest instead: kernel.config with scripts/guest/
#   userspace.config on top (what busybox and fio need; booted under QEMU
#   TCG, see test/helpers/qemu-guest.ts), into its own cache directory
#   <cache>/guest-user-<hash>, printed the same way. <hash> then covers
#   userspace.config and this whole script too. It compiles in
#   <cache>/src-6.1-user, hard links to the unpacked source's files (kbuild
#   refuses an O= build beside src-6.1's in-tree build), so both builds stay
#   incremental. The default build's <hash> covers this script without the
#   blocks marked `userspace variant`: adding the variant did not change it.
#
# <<< userspace variant
# Boot the result with (see /work/shared/HOST-KVM.md for why):
#   console=ttyS0 reboot=k panic=-1 noxsave nofsgsbase nopku noinvpcid
#   clearcpuid=308,141,151
set -euo pipefail
export LC_ALL=C

# Keep stdout for the one result line; everything else goes to stderr.
exec 3>&1 1>&2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
fragment="$here/kernel.config"
init_src="$here/init.S"
cache_root=$(realpath -m "${SPLITVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/splitvm}")

src_pkg=linux-source-6.1
src_tarball=/usr/src/linux-source-6.1.tar.xz
build_pkgs=("$src_pkg" build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils)

started=$SECONDS
log() { printf 'build-kernel: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
elapsed() { printf '%ds' $((SECONDS - started)); }

pkg_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

source_version() {
    dpkg-query -W -f='${Version}' "$src_pkg" 2>/dev/null || true
}

install_missing_packages() {
    local missing=() p
    for p in "${build_pkgs[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing missing packages: ${missing[*]}"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} by hand"
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
}

compute_hash() {
    {
        printf '== kernel.config\n';  cat "$fragment"
        printf '== init.S\n';         cat "$init_src"
        printf '== %s %s\n' "$src_pkg" "$1"
        printf '== build-kernel.sh\n'; cat "$self"
    } | sha256sum | cut -c1-16
}

is_complete() { [[ -f "$1/vmlinux" && -f "$1/bzImage" && -f "$1/initramfs.cpio" ]]; }
# >>> userspace variant

variant=
case $# in
    0) ;;
    1) [[ $1 == --userspace ]] || die "unknown argument: $1 (usage: $0 [--userspace])"; variant=user ;;
    *) die "usage: $0 [--userspace]" ;;
esac
# Files the hash and the configuration read are opened on fds 5 and 6 and
# unlinked at once; each read of /dev/fd/N starts again at their beginning.
if [[ -z $variant ]]; then
    hashed_self=$(mktemp)
    sed '/^# >>> userspace variant$/,/^# <<< userspace variant$/d' "$self" >"$hashed_self"
    exec 5<"$hashed_self"
    rm -f "$hashed_self"
    self=/dev/fd/5
else
    # kernel.config without the symbols userspace.config sets, then userspace.config.
    merged=$(mktemp)
    awk 'NR == FNR { if (match($0, /CONFIG_[A-Za-z0-9_]+/)) set[substr($0, RSTART, RLENGTH)] = 1; next }
         match($0, /^(# )?CONFIG_[A-Za-z0-9_]+(=| is not set$)/) {
             sym = $0; sub(/^# /, "", sym); sub(/[= ].*$/, "", sym); if (sym in set) next }
         { print }' "$here/userspace.config" "$fragment" >"$merged"
    cat "$here/userspace.config" >>"$merged"
    exec 6<"$merged"
    rm -f "$merged"
    fragment=/dev/fd/6
fi
# <<< userspace variant

# ---- Fast path: already built ---------------------------------------------
version=$(source_version)
if [[ -n $version ]]; then
    out="$cache_root/guest-$(compute_hash "$version")"
# >>> userspace variant
    [[ -z $variant ]] || out="$cache_root/guest-user-${out#"$cache_root/guest-"}"
# <<< userspace variant
    if is_complete "$out"; then
        printf '%s\n' "$out" >&3
        exit 0
    fi
fi

# ---- Slow path: build under a lock ----------------------------------------
mkdir -p "$cache_root"
exec 9>"$cache_root/build.lock"
if ! flock -n 9; then
    log "another build is running; waiting for $cache_root/build.lock"
    flock 9
fi

# Holding the lock, no other build runs: remove what killed runs left.
rm -rf "$cache_root"/.guest-*

log "checking build packages"
install_missing_packages
version=$(source_version)
[[ -n $version ]] || die "$src_pkg is not installed"
[[ -f $src_tarball ]] || die "$src_tarball is missing"
hash=$(compute_hash "$version")
# >>> userspace variant
[[ -z $variant ]] || hash=user-$hash
# <<< userspace variant
out="$cache_root/guest-$hash"
if is_complete "$out"; then
    log "built meanwhile by another run"
    printf '%s\n' "$out" >&3
    exit 0
fi
log "building guest-$hash ($src_pkg $version)"

# Unpack once; a version stamp written last marks a complete unpack.
src="$cache_root/src-6.1"
stamp="$src/.splitvm-source-version"
if [[ ! -f $stamp || $(cat "$stamp") != "$version" ]]; then
    log "unpacking $src_tarball into $src"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -xJf "$src_tarball" -C "$src.tmp" --strip-components=1
    mv -T "$src.tmp" "$src"
    printf '%s' "$version" >"$stamp"
else
    log "reusing unpacked source in $src"
fi
# >>> userspace variant

# The variant's tree: hard links to the source files (never written by
# kbuild), without src-6.1's build outputs (mrproper only unlinks).
if [[ -n $variant ]]; then
    usrc="$cache_root/src-6.1-user"
    if [[ ! -f $usrc/.splitvm-source-version || $(cat "$usrc/.splitvm-source-version") != "$version" ]]; then
        log "linking $src into $usrc"
        rm -rf "$usrc" "$usrc.tmp"
        cp -al "$src" "$usrc.tmp"
        rm "$usrc.tmp/.splitvm-source-version"
        make -C "$usrc.tmp" ARCH=x86_64 mrproper >/dev/null
        mv -T "$usrc.tmp" "$usrc"
        printf '%s' "$version" >"$usrc/.splitvm-source-version"
    fi
    src=$usrc
fi
# <<< userspace variant

work=$(mktemp -d "$cache_root/.guest-$hash.XXXXXX")
make_pid=
cleanup() {
    if [[ -n $make_pid ]] && kill -0 "$make_pid" 2>/dev/null; then
        kill "$make_pid" 2>/dev/null || true
        wait "$make_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kmake=(make -C "$src" ARCH=x86_64 KBUILD_BUILD_USER=splitvm KBUILD_BUILD_HOST=splitvm)
build_log="$work/make.log"

# ---- Configure ------------------------------------------------------------
log "configuring: make tinyconfig, merge kernel.config, make olddefconfig"
{
    "${kmake[@]}" tinyconfig
    (cd "$src" && ./scripts/kconfig/merge_config.sh -m .config "$fragment")
    "${kmake[@]}" olddefconfig
} >"$work/config.log" 2>&1 || { tail -n 30 "$work/config.log"; die "configuration failed"; }

# Every value set in the fragment must be in the final .config, and every
# `is not set` must have stayed off; otherwise a dependency is missing.
log "checking .config against kernel.config"
bad=0
while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        sym=${BASH_REMATCH[1]}
        if ! grep -qxF -- "$line" "$src/.config"; then
            got=$(grep -E "^($sym=|# $sym is not set)" "$src/.config" || echo "absent")
            log "  wanted $line, got: $got"
            bad=1
        fi
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        sym=${BASH_REMATCH[1]}
        if grep -qE "^$sym=" "$src/.config"; then
            log "  wanted $sym off, got: $(grep -E "^$sym=" "$src/.config")"
            bad=1
        fi
    fi
done <"$fragment"
[[ $bad -eq 0 ]] || die "kernel.config is not fully applied (fix its dependencies)"
cp "$src/.config" "$work/config"

# ---- Compile --------------------------------------------------------------
jobs=$(nproc)
log "compiling vmlinux and bzImage with make -j$jobs (log: $build_log while running)"
"${kmake[@]}" -j"$jobs" vmlinux bzImage >"$build_log" 2>&1 &
make_pid=$!
tick=0
while kill -0 "$make_pid" 2>/dev/null; do
    sleep 1
    tick=$((tick + 1))
    if ((tick % 15 == 0)); then
        log "  make: $(grep -cE '^  (CC|AS) ' "$build_log" || true) files compiled, $(elapsed)"
    fi
done
if ! wait "$make_pid"; then
    make_pid=
    tail -n 40 "$build_log"
    die "make vmlinux bzImage failed"
fi
make_pid=
log "  make: done, $(grep -cE '^  (CC|AS) ' "$build_log" || true) files compiled, $(elapsed)"

# The uncompressed ELF; keep its symbol table (for mapping guest addresses),
# drop debug sections if any.
strip --strip-debug -o "$work/vmlinux" "$src/vmlinux"
cp "$src/arch/x86/boot/bzImage" "$work/bzImage"
log "vmlinux: $(stat -c %s "$work/vmlinux") bytes, bzImage: $(stat -c %s "$work/bzImage") bytes"

# ---- Initramfs ------------------------------------------------------------
log "building /init from init.S and initramfs.cpio"
gcc -nostdlib -static -no-pie -s -Wl,--build-id=none -o "$work/init" "$init_src"
gen_init_cpio="$src/usr/gen_init_cpio"
if [[ ! -x $gen_init_cpio ]]; then
    "${kmake[@]}" usr/gen_init_cpio >>"$build_log" 2>&1 || die "building gen_init_cpio failed"
fi
touch -d @0 "$work/init"
cat >"$work/initramfs.list" <<EOF
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
dir /proc 0755 0 0
dir /sys 0755 0 0
dir /root 0700 0 0
file /init $work/init 0755 0 0
EOF
"$gen_init_cpio" -t 0 "$work/initramfs.list" >"$work/initramfs.cpio"
log "initramfs.cpio: $(stat -c %s "$work/initramfs.cpio") bytes"

# ---- Publish atomically ---------------------------------------------------
rm -f "$work/initramfs.list" "$work/init" "$work/config.log"
mv "$build_log" "$work/build.log"
chmod 0755 "$work"
rm -rf "$out"
mv -T "$work" "$out"
trap - EXIT
log "done in $(elapsed): $out"
printf '%s\n' "$out" >&3
