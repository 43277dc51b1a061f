#!/usr/bin/env bash
# Looks for rare guest kernel races: runs one host-built binary N times in the VM rig, many times per boot
# (repeat-in-guest.sh), booting again after each guest kernel failure until N runs are done, and tallies passes,
# binary failures and kernel failures. The tally is the evidence behind docs/vm-rig.md's kernel table.
#
#   hw-tests/vm/campaign.sh [--kernel 6.1|6.12|ABI] --runs N [--per-boot M] <binary> [args...]
#   e.g. hw-tests/vm/campaign.sh --kernel 6.1 --runs 20 target/release/examples/bluez_selftest --bytes 2000000
# --per-boot M (default: all) boots afresh every M runs; --per-boot 1 is what CI does (one run per boot).
#
# Each kernel failure's trace is kept in hw-tests/vm/cache/campaign/<kernel>-failure-K.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${COLINK_VM_CACHE:-$HERE/cache}"
kernel=6.1 runs=10 per_boot=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --kernel) kernel=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --per-boot) per_boot=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[[ $# -ge 1 && -x "$1" ]] || { echo "usage: $0 [--kernel K] --runs N <binary> [args...]" >&2; exit 2; }
bin=$1; shift
out="$CACHE/campaign"; mkdir -p "$out"
done_runs=0 passed=0 failed=0 kfail=0 boots=0 kver=""
while ((done_runs < runs)); do
    boots=$((boots + 1))
    left=$((runs - done_runs))
    ((per_boot == 0 || left <= per_boot)) || left=$per_boot
    set +e
    COLINK_VM_RETRIES=0 COLINK_VM_FILES="$bin" "$HERE/run.sh" --kernel "$kernel" -- "$HERE/repeat-in-guest.sh" \
        "$left" "$(basename "$bin")" "$@" > "$out/$kernel-boot-$boots.log" 2>&1
    rc=$?
    set -e
    kver=$(sed -n 's/^.*booting \([^ ]*\) under qemu.*$/\1/p' "$out/$kernel-boot-$boots.log" | head -n 1)
    p=$(grep -c '^=== run [0-9]* of' "$out/$kernel-boot-$boots.log" || true)   # runs started in this boot
    f=$(grep -c '^=== run [0-9]* FAILED' "$out/$kernel-boot-$boots.log" || true)
    if [[ $rc -eq 123 ]]; then
        kfail=$((kfail + 1))
        cp "$CACHE/last-run/kernel-failure.txt" "$out/$kver-failure-$kfail.txt"
        # the run that was under way when the kernel failed counts as run, not as passed
        passed=$((passed + p - 1 - f)); failed=$((failed + f))
        echo "boot $boots ($kver): guest kernel failure in run $((done_runs + p)) — $(sed -n 2p "$CACHE/last-run/kernel-failure.txt" | sed 's/^ *//')"
        done_runs=$((done_runs + p))
        ((p > 0)) || { echo "the kernel failed before the first run: giving up"; break; }
    elif [[ $rc -eq 0 || $rc -eq 1 ]] && ((p == left)); then
        passed=$((passed + p - f)); failed=$((failed + f)); done_runs=$((done_runs + p))
        echo "boot $boots ($kver): $((p - f)) of $p runs passed"
    else
        echo "boot $boots ($kver): rig failure (exit $rc); see $out/$kernel-boot-$boots.log"; break
    fi
done
echo "campaign on $kver: $done_runs runs in $boots boots: $passed passed, $failed failed (binary), $kfail guest kernel failure(s)"
((kfail == 0 && failed == 0))
