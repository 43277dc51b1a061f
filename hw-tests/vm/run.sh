#!/usr/bin/env bash
# Boot a QEMU (TCG) guest running Debian bookworm's kernel Bluetooth stack and run one host-built binary in it.
#
#   hw-tests/vm/run.sh [--] <binary> [args...]
#
# The guest has two virtual controllers (btvirt -l2: hci0 and hci1, joined by an emulated radio), dbus and
# bluetoothd -E. The binary's exit code becomes this script's exit code. Boot or rig failures exit with 125 and
# print the guest console; the console, bluetoothd log and the binary's output of the last run are kept in
# hw-tests/vm/cache/last-run/. Everything the facts below rely on is in docs/vm-rig.md.
#
# Environment:
#   COLINK_VM_TIMEOUT   seconds before the guest is killed (default 900)
#   COLINK_VM_MIRROR    Debian mirror (default http://deb.debian.org/debian)
#   COLINK_VM_SECURITY  Debian security mirror (default http://deb.debian.org/debian-security)
#   COLINK_VM_CACHE     cache directory (default hw-tests/vm/cache next to this script)
#   COLINK_VM_OFFLINE=1 do not ask the archive for a newer kernel; use the newest cached image
#   COLINK_VM_FILES     extra host files copied to /share in the guest (space-separated; for debugging scripts)
set -euo pipefail

# Bump when the image contents or the guest init change: it is part of the cache key.
SCRIPT_VERSION=4
# Kernel ABIs known to be broken in the rig. 6.1.0-50 (6.1.176) deadlocks on LE connect
# ("kworker blocked for more than 120 seconds"); reproduced twice. Never boot it.
BAD_KERNELS=" 6.1.0-50-amd64 "

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${COLINK_VM_CACHE:-$HERE/cache}"
TIMEOUT="${COLINK_VM_TIMEOUT:-900}"
MIRROR="${COLINK_VM_MIRROR:-http://deb.debian.org/debian}"
SECMIRROR="${COLINK_VM_SECURITY:-http://deb.debian.org/debian-security}"
T0=${EPOCHREALTIME/./}

elapsed() { local us=$(( ${EPOCHREALTIME/./} - T0 )); printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10)); }
log() { printf '[vm-rig %5ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { printf '[vm-rig] ERROR: %s\n' "$*" >&2; exit 125; }

[[ "${1:-}" == "--" ]] && shift
[[ $# -ge 1 ]] || die "usage: $0 [--] <host-built binary> [args...]"
BIN="$1"; shift
[[ -f "$BIN" && -x "$BIN" ]] || die "not an executable file: $BIN"

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

# --- host packages -------------------------------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v cpio >/dev/null || need+=(cpio)
if [[ ${#need[@]} -gt 0 ]]; then
    log "installing host packages: ${need[*]}"
    $SUDO apt-get update -qq
    # Without recommends there are no iPXE option ROMs: the guest runs with -nic none.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$CACHE"

# --- which kernel --------------------------------------------------------------------------------------------------
# A private apt configuration (bookworm + bookworm-updates + bookworm-security) so that the host's own sources do
# not matter; only used to resolve and download the kernel package.
APTDIR="$CACHE/apt"
mkdir -p "$APTDIR"/{state/lists/partial,cache/archives/partial,etc/preferences.d,etc/apt.conf.d}
cat > "$APTDIR/etc/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECMIRROR bookworm-security main
SRC
touch "$APTDIR/state/status"
APT_OPTS=(-o "Dir::Etc::SourceList=$APTDIR/etc/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::Etc::Preferences=$APTDIR/etc/preferences" -o "Dir::Etc::PreferencesParts=$APTDIR/etc/preferences.d"
          -o "Dir::State=$APTDIR/state" -o "Dir::State::status=$APTDIR/state/status"
          -o "Dir::Cache=$APTDIR/cache" -o "Debug::NoLocking=1" -o "APT::Architecture=amd64"
          -o "APT::Sandbox::User=root"
          -o "Dir::Etc::Parts=$APTDIR/etc/apt.conf.d" -o "Acquire::Languages=none")

newest_cached_image() {
    # newest cached image for this script version (by kernel version)
    ls -d "$CACHE"/image-v"$SCRIPT_VERSION"-*/ 2>/dev/null | sed 's#/$##' | while read -r d; do
        [[ -f "$d/initrd.cpio" && -f "$d/vmlinuz" ]] && echo "$d"
    done | sort -V | tail -n 1
}

KVER=""
if [[ "${COLINK_VM_OFFLINE:-0}" != 1 ]]; then
    if apt-get "${APT_OPTS[@]}" -qq update 2>"$CACHE/apt-update.err"; then
        KVER="$(apt-cache "${APT_OPTS[@]}" depends linux-image-amd64 2>/dev/null \
                | sed -n 's/^ *Depends: linux-image-\(.*\)$/\1/p' | head -n 1)"
        if [[ -n "$KVER" && "$BAD_KERNELS" == *" $KVER "* ]]; then
            log "linux-image-amd64 depends on $KVER, which is known to deadlock on LE connect: looking for another"
            KVER="$(apt-cache "${APT_OPTS[@]}" pkgnames linux-image-6 2>/dev/null \
                    | sed -n 's/^linux-image-\(6\.[0-9.]*-[0-9]*-amd64\)$/\1/p' \
                    | while read -r k; do [[ "$BAD_KERNELS" == *" $k "* ]] || echo "$k"; done | sort -V | tail -n 1)"
            [[ -n "$KVER" ]] || die "no usable kernel in the archive (all known-bad: $BAD_KERNELS)"
        fi
    else
        log "apt-get update failed ($(tail -n 1 "$CACHE/apt-update.err")); falling back to the cache"
    fi
fi
if [[ -z "$KVER" ]]; then
    img="$(newest_cached_image)"
    [[ -n "$img" ]] || die "cannot resolve the kernel version (offline?) and nothing is cached"
    KVER="${img##*/image-v$SCRIPT_VERSION-}"
fi
[[ "$BAD_KERNELS" != *" $KVER "* ]] || die "kernel $KVER is known to deadlock on LE connect"
IMG="$CACHE/image-v$SCRIPT_VERSION-$KVER"

# --- build the image (cached) --------------------------------------------------------------------------------------
build_image() {
    local work="$CACHE/build.$$"
    rm -rf "$work"; mkdir -p "$work"
    trap 'rm -rf "$work"' RETURN
    local root="$work/root"

    log "downloading kernel package linux-image-$KVER"
    (cd "$work" && apt-get "${APT_OPTS[@]}" -qq download "linux-image-$KVER") \
        || die "apt-get download linux-image-$KVER failed"
    local deb; deb="$(ls "$work"/linux-image-"$KVER"_*.deb | head -n 1)"
    dpkg -x "$deb" "$work/kernel"

    log "building the root filesystem with mmdebstrap (bookworm minbase + dbus bluez bluez-test-tools kmod)"
    nice -n 10 mmdebstrap --quiet --variant=minbase --include=dbus,bluez,bluez-test-tools,kmod \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm "$root" \
        "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECMIRROR bookworm-security main" \
        || die "mmdebstrap failed"
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*

    # Only the module subtrees the rig needs (bluetooth, hci_vhci, rfcomm, bnep, virtio, 9p and their deps).
    local km="lib/modules/$KVER"
    mkdir -p "$root/$km/kernel"
    cp "$work/kernel/$km"/modules.{order,builtin,builtin.modinfo} "$root/$km/" 2>/dev/null || true
    for sub in net crypto lib arch drivers/bluetooth drivers/virtio drivers/char fs/9p fs/netfs fs/fscache; do
        if [[ -d "$work/kernel/$km/kernel/$sub" ]]; then
            mkdir -p "$root/$km/kernel/$(dirname "$sub")"
            cp -a "$work/kernel/$km/kernel/$sub" "$root/$km/kernel/$sub"
        fi
    done
    chroot "$root" depmod "$KVER" || die "depmod failed"
    cp "$HERE/guest-init.sh" "$root/init"
    chmod 755 "$root/init"
    echo "$KVER" > "$root/etc/colink-vm-kernel"

    log "packing the initramfs"
    (cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) > "$work/initrd.cpio" || die "cpio failed"
    mkdir -p "$IMG.tmp"
    mv "$work/initrd.cpio" "$IMG.tmp/initrd.cpio"
    cp "$work/kernel/boot/vmlinuz-$KVER" "$IMG.tmp/vmlinuz"
    # guest-init.sh is part of the image: remember its hash so an edit rebuilds it.
    sha256sum "$HERE/guest-init.sh" | cut -d' ' -f1 > "$IMG.tmp/init.sha256"
    rm -rf "$IMG"; mv "$IMG.tmp" "$IMG"
    log "image ready: $IMG ($(du -sh "$IMG/initrd.cpio" | cut -f1))"
}

init_hash="$(sha256sum "$HERE/guest-init.sh" | cut -d' ' -f1)"
if [[ ! -f "$IMG/initrd.cpio" || ! -f "$IMG/vmlinuz" || "$(cat "$IMG/init.sha256" 2>/dev/null)" != "$init_hash" ]]; then
    build_image
    # keep only the current image
    for old in "$CACHE"/image-v*; do [[ "$old" == "$IMG" ]] || rm -rf "$old"; done
else
    log "using cached image $IMG"
fi

# --- run -----------------------------------------------------------------------------------------------------------
OUT="$CACHE/last-run"
rm -rf "$OUT"; mkdir -p "$OUT/share"
cp "$BIN" "$OUT/share/test-binary"
for f in ${COLINK_VM_FILES:-}; do cp "$f" "$OUT/share/"; done
{
    echo '#!/bin/bash'
    printf 'exec /share/test-binary'
    for a in "$@"; do printf ' %q' "$a"; done
    echo
} > "$OUT/share/run.sh"
chmod 755 "$OUT/share/run.sh"

log "booting $KVER under qemu (TCG, timeout ${TIMEOUT}s)"
set +e
nice -n 10 timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m 2048 -nic none \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    -virtfs "local,path=$OUT/share,mount_tag=share,security_model=none" \
    -nographic -no-reboot -monitor none -serial stdio </dev/null 2>&1 | tee "$OUT/console.log" \
    | sed -u -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g'

qemu_rc=${PIPESTATUS[0]}
set -e
log "guest stopped (qemu exit $qemu_rc)"

for f in bluetoothd.log btvirt.log output.log rig.log dmesg.log; do
    [[ -f "$OUT/share/$f" ]] && cp "$OUT/share/$f" "$OUT/$f"
done
if [[ ! -f "$OUT/share/exit-code" ]]; then
    echo "==================================================================================" >&2
    if [[ $qemu_rc -eq 124 ]]; then
        echo "[vm-rig] FAILED: the guest did not finish within ${TIMEOUT}s" >&2
    else
        echo "[vm-rig] FAILED: the guest stopped without running the binary (boot or rig failure, qemu exit $qemu_rc)" >&2
    fi
    echo "[vm-rig] console: $OUT/console.log   rig log: $OUT/rig.log   bluetoothd: $OUT/bluetoothd.log" >&2
    [[ -f "$OUT/rig.log" ]] && { echo "--- rig.log ---" >&2; tail -n 30 "$OUT/rig.log" >&2; }
    echo "==================================================================================" >&2
    exit 125
fi
rc="$(cat "$OUT/share/exit-code")"
if [[ "$rc" != 0 ]]; then
    log "binary exited with $rc; logs kept in $OUT (console.log, bluetoothd.log, output.log)"
fi
exit "$rc"
