#!/usr/bin/env bash
# Boot a QEMU (TCG) guest running a Debian kernel's Bluetooth stack and run one host-built binary in it.
#
#   hw-tests/vm/run.sh [--kernel SERIES] [--] <binary> [args...]
#
# The guest has two virtual controllers (btvirt -l2: hci0 and hci1, joined by an emulated radio), dbus and
# bluetoothd -E (BlueZ 5.66, Debian bookworm userspace). The binary's exit code becomes this script's exit code.
#
# The guest console is watched while it runs: a kernel BUG, Oops, list corruption, general protection fault,
# hung-task or RCU-stall report or a panic stops the guest within seconds (it would otherwise sit until the
# timeout), the trace is printed and the run counts as a GUEST KERNEL FAILURE, not a failure of the binary.
# Such a run is repeated once on a fresh boot (COLINK_VM_RETRIES); both outcomes are printed. A failure of the
# binary itself (any non-zero exit code of its own) is never retried.
#
# Exit codes: the binary's own; 123 when the guest kernel failed on every attempt; 125 when the guest did not
# boot, the rig did not come up or the timeout hit. The logs of the last run (console, rig, bluetoothd, btvirt,
# dmesg, the binary's output, kernel-failure.txt) are kept in hw-tests/vm/cache/last-run/, those of an attempt
# that was retried in last-run/attempt-N/. Everything the facts below rely on is in docs/vm-rig.md.
#
# Kernels (--kernel or COLINK_VM_KERNEL):
#   6.1   (default) the newest bookworm kernel that linux-image-amd64 depends on (bookworm-security/-updates)
#   6.12  the newest linux-image-6.12.*-amd64 in bookworm-backports (the series of Debian 13, close to the
#         kernels of Ubuntu 24.04 and Fedora)
#   an exact ABI such as 6.12.117+deb12-amd64
# Each kernel has its own cached image (the root filesystem is built once and shared).
#
# Environment:
#   COLINK_VM_KERNEL    kernel series or ABI (default 6.1); --kernel overrides it
#   COLINK_VM_TIMEOUT   seconds before the guest is killed (default 900)
#   COLINK_VM_RETRIES   extra boots after a guest kernel failure (default 1; 0 = report it at once)
#   COLINK_VM_MIRROR    Debian mirror (default http://deb.debian.org/debian)
#   COLINK_VM_SECURITY  Debian security mirror (default http://deb.debian.org/debian-security)
#   COLINK_VM_CACHE     cache directory (default hw-tests/vm/cache next to this script)
#   COLINK_VM_OFFLINE=1 do not ask the archive for a newer kernel; use the newest cached image
#   COLINK_VM_FILES     extra host files copied to /share in the guest (space-separated; for debugging scripts)
set -euo pipefail

# Bump when the image contents or the guest init change: it is part of the cache key.
SCRIPT_VERSION=5
# Kernel ABIs known to be broken in the rig. 6.1.0-50 (6.1.176) deadlocks on LE connect
# ("kworker blocked for more than 120 seconds"); reproduced twice. Never boot it.
BAD_KERNELS=" 6.1.0-50-amd64 "
# Exit code for "the guest kernel failed on every attempt" (distinct from the binary's codes and from 125).
KERNEL_FAILED=123

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${COLINK_VM_CACHE:-$HERE/cache}"
TIMEOUT="${COLINK_VM_TIMEOUT:-900}"
RETRIES="${COLINK_VM_RETRIES:-1}"
KERNEL="${COLINK_VM_KERNEL:-6.1}"
MIRROR="${COLINK_VM_MIRROR:-http://deb.debian.org/debian}"
SECMIRROR="${COLINK_VM_SECURITY:-http://deb.debian.org/debian-security}"
T0=${EPOCHREALTIME/./}

elapsed() { local us=$(( ${EPOCHREALTIME/./} - T0 )); printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10)); }
log() { printf '[vm-rig %5ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { printf '[vm-rig] ERROR: %s\n' "$*" >&2; exit 125; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --kernel) [[ $# -ge 2 ]] || die "--kernel needs a value (6.1, 6.12 or an ABI)"; KERNEL="$2"; shift 2 ;;
        --kernel=*) KERNEL="${1#--kernel=}"; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || die "usage: $0 [--kernel 6.1|6.12|ABI] [--] <host-built binary> [args...]"
BIN="$1"; shift
[[ -f "$BIN" && -x "$BIN" ]] || die "not an executable file: $BIN"
[[ "$RETRIES" =~ ^[0-9]+$ ]] || die "COLINK_VM_RETRIES must be a number, not '$RETRIES'"

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
# A private apt configuration (bookworm + -updates + -security + -backports) so that the host's own sources do
# not matter; only used to resolve and download the kernel package. Backports are NotAutomatic: the candidate of
# linux-image-amd64 stays bookworm's, and 6.12 is picked by package name.
APTDIR="$CACHE/apt"
mkdir -p "$APTDIR"/{state/lists/partial,cache/archives/partial,etc/preferences.d,etc/apt.conf.d}
cat > "$APTDIR/etc/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECMIRROR bookworm-security main
deb $MIRROR bookworm-backports main
SRC
touch "$APTDIR/state/status"
APT_OPTS=(-o "Dir::Etc::SourceList=$APTDIR/etc/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::Etc::Preferences=$APTDIR/etc/preferences" -o "Dir::Etc::PreferencesParts=$APTDIR/etc/preferences.d"
          -o "Dir::State=$APTDIR/state" -o "Dir::State::status=$APTDIR/state/status"
          -o "Dir::Cache=$APTDIR/cache" -o "Debug::NoLocking=1" -o "APT::Architecture=amd64"
          -o "APT::Sandbox::User=root"
          -o "Dir::Etc::Parts=$APTDIR/etc/apt.conf.d" -o "Acquire::Languages=none")

# The ABI glob of a kernel series: "6.1" -> 6.1.*, "6.12" -> 6.12.*; an exact ABI matches itself.
series_glob() {
    if [[ "$1" =~ ^[0-9]+\.[0-9]+$ ]]; then echo "$1.*"; else echo "$1"; fi
}
is_bad() { [[ "$BAD_KERNELS" == *" $1 "* ]]; }

newest_cached_image() { # newest cached image of this script version whose kernel matches the series
    local glob; glob="$(series_glob "$KERNEL")"
    ls -d "$CACHE"/image-v"$SCRIPT_VERSION"-*/ 2>/dev/null | sed 's#/$##' | while read -r d; do
        local k="${d##*/image-v$SCRIPT_VERSION-}"
        # shellcheck disable=SC2053 # the glob is meant to match
        if [[ $k == $glob && -f "$d/initrd.cpio" && -f "$d/vmlinuz" ]]; then echo "$d"; fi
    done | sort -V | tail -n 1
}

resolve_kernel() { # prints the kernel ABI to use for $KERNEL, or nothing
    local k=""
    local series="$KERNEL"
    [[ "$KERNEL" =~ ^[0-9]+\.[0-9]+$ ]] || series=exact
    case "$series" in
        6.1)
            k="$(apt-cache "${APT_OPTS[@]}" depends linux-image-amd64 2>/dev/null \
                 | sed -n 's/^ *Depends: linux-image-\(6\.1\.[0-9]*-[0-9]*-amd64\)$/\1/p' | head -n 1)"
            if [[ -z "$k" ]] || is_bad "$k"; then
                [[ -n "$k" ]] && log "linux-image-amd64 depends on $k, which is known to be broken: looking for another"
                k="$(apt-cache "${APT_OPTS[@]}" pkgnames linux-image-6.1. 2>/dev/null \
                     | sed -n 's/^linux-image-\(6\.1\.[0-9]*-[0-9]*-amd64\)$/\1/p' \
                     | while read -r c; do is_bad "$c" || echo "$c"; done | sort -V | tail -n 1)"
            fi ;;
        exact) k="$KERNEL" ;;
        *)
            local esc="${KERNEL//./\\.}"
            k="$(apt-cache "${APT_OPTS[@]}" pkgnames "linux-image-$KERNEL." 2>/dev/null \
                 | sed -n "s/^linux-image-\\($esc\\.[0-9]*[^-]*-amd64\\)\$/\\1/p" \
                 | while read -r c; do is_bad "$c" || echo "$c"; done | sort -V | tail -n 1)" ;;
    esac
    echo "$k"
}

KVER=""
if [[ "${COLINK_VM_OFFLINE:-0}" != 1 ]]; then
    if apt-get "${APT_OPTS[@]}" -qq update 2>"$CACHE/apt-update.err"; then
        KVER="$(resolve_kernel)"
        [[ -n "$KVER" ]] || log "no kernel of series $KERNEL in the archive; falling back to the cache"
    else
        log "apt-get update failed ($(tail -n 1 "$CACHE/apt-update.err")); falling back to the cache"
    fi
fi
if [[ -z "$KVER" ]]; then
    img="$(newest_cached_image)"
    [[ -n "$img" ]] || die "cannot resolve a kernel for '$KERNEL' (offline?) and nothing is cached"
    KVER="${img##*/image-v$SCRIPT_VERSION-}"
fi
! is_bad "$KVER" || die "kernel $KVER is known to be broken in the rig (BAD_KERNELS)"
IMG="$CACHE/image-v$SCRIPT_VERSION-$KVER"

# --- build the image (cached) --------------------------------------------------------------------------------------
# The root filesystem (bookworm minbase + dbus bluez bluez-test-tools kmod) does not depend on the kernel: it is
# built once per script version and shared by every kernel's image.
ROOTFS_TAR="$CACHE/rootfs-v$SCRIPT_VERSION.tar"
build_rootfs() {
    log "building the root filesystem with mmdebstrap (bookworm minbase + dbus bluez bluez-test-tools kmod)"
    rm -f "$ROOTFS_TAR.tmp"
    nice -n 10 mmdebstrap --quiet --format=tar --variant=minbase --include=dbus,bluez,bluez-test-tools,kmod \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
        bookworm "$ROOTFS_TAR.tmp" \
        "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECMIRROR bookworm-security main" \
        || die "mmdebstrap failed"
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
}

build_image() {
    local work="$CACHE/build.$$"
    rm -rf "$work"; mkdir -p "$work"
    trap 'rm -rf "$work"; trap - RETURN' RETURN
    local root="$work/root"

    log "downloading kernel package linux-image-$KVER"
    (cd "$work" && apt-get "${APT_OPTS[@]}" -qq download "linux-image-$KVER") \
        || die "apt-get download linux-image-$KVER failed"
    local deb; deb="$(ls "$work"/linux-image-"$KVER"_*.deb | head -n 1)"
    dpkg -x "$deb" "$work/kernel"

    [[ -f "$ROOTFS_TAR" ]] || build_rootfs
    mkdir -p "$root"
    tar -C "$root" -xf "$ROOTFS_TAR" || die "unpacking $ROOTFS_TAR failed"

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
    # Keep one image per kernel series (the newest); drop images and root filesystems of older script versions.
    [[ "$KVER" =~ ^([0-9]+\.[0-9]+)\. ]] && glob="${BASH_REMATCH[1]}.*" || glob="$KVER"
    for old in "$CACHE"/image-v* "$CACHE"/rootfs-v*.tar; do
        [[ -e "$old" && "$old" != "$IMG" && "$old" != "$ROOTFS_TAR" ]] || continue
        k="${old##*/image-v$SCRIPT_VERSION-}"
        # shellcheck disable=SC2053
        if [[ "$old" != "$CACHE/image-v$SCRIPT_VERSION-"* || $k == $glob ]]; then rm -rf "$old"; fi
    done
else
    log "using cached image $IMG"
fi

# --- the console watcher (console-watch.sh: watch_console) ----------------------------------------------------------
# shellcheck source=console-watch.sh
source "$HERE/console-watch.sh"

# --- run -----------------------------------------------------------------------------------------------------------
OUT="$CACHE/last-run"
rm -rf "$OUT"

# boot_once ATTEMPT: one fresh boot running the binary. Sets ATTEMPT_RC (the binary's exit code, KERNEL_FAILED or
# 125) and ATTEMPT_WHAT (one line saying what happened).
boot_once() {
    local attempt=$1; shift
    rm -rf "$OUT/share" "$OUT"/*.log "$OUT"/kernel-*
    mkdir -p "$OUT/share"
    cp "$BIN" "$OUT/share/test-binary"
    for f in ${COLINK_VM_FILES:-}; do cp "$f" "$OUT/share/"; done
    echo "$attempt" > "$OUT/share/attempt"
    {
        echo '#!/bin/bash'
        printf 'exec /share/test-binary'
        for a in "$@"; do printf ' %q' "$a"; done
        echo
    } > "$OUT/share/run.sh"
    chmod 755 "$OUT/share/run.sh"

    log "booting $KVER under qemu (TCG, timeout ${TIMEOUT}s; attempt $attempt of $((RETRIES + 1)))"
    local fifo="$OUT/console.fifo"
    rm -f "$fifo"; mkfifo "$fifo"
    set +e
    # printk.time=1: kernel lines carry a timestamp, which is how the watcher tells them from the binary's
    # output; loglevel=5 puts kernel warnings on the console too.
    nice -n 10 timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m 2048 -nic none \
        -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.cpio" \
        -append "console=ttyS0 quiet loglevel=5 printk.time=1 panic=-1 rdinit=/init" \
        -virtfs "local,path=$OUT/share,mount_tag=share,security_model=none" \
        -nographic -no-reboot -monitor none -serial stdio </dev/null >"$fifo" 2>&1 &
    local qpid=$!
    watch_console "$qpid" "$OUT" < "$fifo"

    wait "$qpid"
    local qemu_rc=$?
    set -e
    rm -f "$fifo"
    log "guest stopped (qemu exit $qemu_rc)"

    for f in bluetoothd.log btvirt.log output.log rig.log dmesg.log; do
        [[ -f "$OUT/share/$f" ]] && cp "$OUT/share/$f" "$OUT/$f"
    done
    if [[ -f "$OUT/kernel-failure.txt" ]]; then
        local what; what="$(sed -n 2p "$OUT/kernel-failure.txt" | sed 's/^ *//')"
        echo "==================================================================================" >&2
        echo "[vm-rig] GUEST KERNEL FAILURE ($KVER) — the Linux kernel in the guest failed, not colink:" >&2
        sed -n '4,$p' "$OUT/kernel-failure.txt" | head -n 80 >&2
        echo "[vm-rig] full console: $OUT/console.log" >&2
        echo "==================================================================================" >&2
        ATTEMPT_RC=$KERNEL_FAILED
        ATTEMPT_WHAT="guest kernel failure ($what; guest stopped $(awk '{printf "%.1f", $1/1000}' \
            "$OUT/kernel-failure.stop-ms") s after it)"
    elif [[ ! -f "$OUT/share/exit-code" ]]; then
        echo "==================================================================================" >&2
        if [[ $qemu_rc -eq 124 ]]; then
            echo "[vm-rig] FAILED: the guest did not finish within ${TIMEOUT}s" >&2
            ATTEMPT_WHAT="rig failure: the guest did not finish within ${TIMEOUT}s"
        else
            echo "[vm-rig] FAILED: the guest stopped without running the binary (boot or rig failure, qemu exit $qemu_rc)" >&2
            ATTEMPT_WHAT="rig failure: the guest stopped without running the binary (qemu exit $qemu_rc)"
        fi
        echo "[vm-rig] console: $OUT/console.log   rig log: $OUT/rig.log   bluetoothd: $OUT/bluetoothd.log" >&2
        [[ -f "$OUT/rig.log" ]] && { echo "--- rig.log ---" >&2; tail -n 30 "$OUT/rig.log" >&2; }
        echo "==================================================================================" >&2
        ATTEMPT_RC=125
    else
        ATTEMPT_RC="$(cat "$OUT/share/exit-code")"
        if [[ "$ATTEMPT_RC" == 0 ]]; then
            ATTEMPT_WHAT="the binary passed (exit 0)"
        else
            ATTEMPT_WHAT="the binary failed (exit $ATTEMPT_RC)"
            log "binary exited with $ATTEMPT_RC; logs kept in $OUT (console.log, bluetoothd.log, output.log)"
        fi
    fi
    if [[ -f "$OUT/kernel-warnings.count" ]]; then
        log "note: the guest kernel printed $(cat "$OUT/kernel-warnings.count") warning(s) (not fatal): $OUT/kernel-warnings.txt"
        ATTEMPT_WHAT+="; $(cat "$OUT/kernel-warnings.count") kernel warning(s)"
    fi
}

outcomes=()
attempt=1
while true; do
    boot_once "$attempt" "$@"
    outcomes+=("attempt $attempt: $ATTEMPT_WHAT")
    if [[ $ATTEMPT_RC -ne $KERNEL_FAILED || $attempt -gt $RETRIES ]]; then break; fi
    # Keep the failed attempt's logs, then try once more on a fresh boot.
    mkdir -p "$OUT/attempt-$attempt"
    mv "$OUT"/*.log "$OUT"/kernel-* "$OUT/attempt-$attempt/" 2>/dev/null || true
    log "the guest kernel failed (not colink): retrying on a fresh boot; logs of attempt $attempt in $OUT/attempt-$attempt/"
    attempt=$((attempt + 1))
done
if [[ $attempt -gt 1 || $ATTEMPT_RC -eq $KERNEL_FAILED ]]; then
    log "outcome on $KVER:"
    for o in "${outcomes[@]}"; do log "  $o"; done
fi
if [[ $ATTEMPT_RC -eq $KERNEL_FAILED ]]; then
    log "FAILED: the guest kernel $KVER failed on every attempt (exit $KERNEL_FAILED)"
fi
exit "$ATTEMPT_RC"
