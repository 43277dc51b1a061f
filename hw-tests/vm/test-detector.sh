#!/usr/bin/env bash
# Tests the VM rig's handling of guest kernel failures on a real guest (hw-tests/vm/run.sh with
# provoke-kernel-failure.sh as the binary):
#   1. a panic that leaves the guest hanging is caught and the guest stopped within 10 s, reported as a guest
#      kernel failure (exit 123), with no retry when COLINK_VM_RETRIES=0;
#   2. a kernel failure on the first boot only: retried once on a fresh boot, both outcomes printed, exit 0;
#   3. a failure of the binary itself (exit 3) is reported as such and never retried.
#   hw-tests/vm/test-detector.sh [--kernel 6.1|6.12]     (about 1-2 minutes with a cached image)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROVOKE="$HERE/provoke-kernel-failure.sh"
OUT="${COLINK_VM_CACHE:-$HERE/cache}/last-run"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
failures=0; passed=0

run() { # run NAME RETRIES ARGS... : runs the rig, output in $tmp/NAME.log, exit code in RC
    local name=$1 retries=$2; shift 2
    local t0=${EPOCHREALTIME/./}
    set +e
    COLINK_VM_RETRIES=$retries "$HERE/run.sh" "${KARGS[@]}" -- "$PROVOKE" "$@" > "$tmp/$name.log" 2>&1
    RC=$?
    set -e
    TOOK=$(( (${EPOCHREALTIME/./} - t0) / 1000000 ))
}
check() { # check NAME CONDITION-DESCRIPTION TEST...
    local name=$1 what=$2; shift 2
    if "$@"; then
        echo "     ok: $what"
    else
        echo "     FAILED: $what"; FAILED_CASE=1
    fi
}
finish_case() {
    local name=$1
    if ((FAILED_CASE)); then
        failures=$((failures + 1)); echo "FAIL $name; its rig output:"; sed 's/^/     | /' "$tmp/$name.log" | tail -n 60
    else
        passed=$((passed + 1)); echo "ok   $name"
    fi
}
has() { grep -qF -- "$2" "$tmp/$1.log"; }
count() { grep -cF -- "$2" "$tmp/$1.log" || true; }

KARGS=()
[[ "${1:-}" == --kernel ]] && KARGS=(--kernel "$2")

# 1. a hanging panic: detected and stopped within 10 s, not retried with RETRIES=0
FAILED_CASE=0
run panic_hang 0 panic-hang
echo "case panic_hang: rig exit $RC after ${TOOK} s"
check panic_hang "exit code 123 (guest kernel failure)" test "$RC" -eq 123
check panic_hang "says the guest kernel failed, not colink" has panic_hang "GUEST KERNEL FAILURE"
check panic_hang "prints the trace" has panic_hang "Kernel panic - not syncing"
check panic_hang "booted once (COLINK_VM_RETRIES=0)" test "$(count panic_hang "booting ")" -eq 1
# Time from the provocation (a kernel line with the kernel's timestamp) to the guest stopped: the kernel's own
# clock up to the first failure line, the host's from there (kernel-failure.stop-ms).
t_prov=$(sed -n 's/^.*\[ *\([0-9.]*\)\] colink-rig: provoking.*$/\1/p' "$OUT/console.log" | head -n 1 || true)
t_fail=$(sed -n '4s/^.*\[ *\([0-9.]*\)\].*$/\1/p' "$OUT/kernel-failure.txt" 2>/dev/null | head -n 1 || true)
stop_ms=$(cat "$OUT/kernel-failure.stop-ms" 2>/dev/null || echo 999999)
caught=$(awk -v p="${t_prov:-0}" -v f="${t_fail:-999}" -v s="$stop_ms" 'BEGIN { printf "%.2f", (f - p) + s / 1000 }')
echo "     provocation → first failure line $(awk -v p="${t_prov:-0}" -v f="${t_fail:-999}" 'BEGIN{printf "%.2f", f-p}') s (guest clock), → guest stopped $(awk -v s="$stop_ms" 'BEGIN{printf "%.2f", s/1000}') s later (host clock): caught in ${caught} s"
check panic_hang "caught and stopped within 10 s of the provocation" awk -v c="$caught" 'BEGIN { exit !(c <= 10) }'
finish_case panic_hang

# 2. a kernel failure on the first boot only: one retry on a fresh boot, which passes
FAILED_CASE=0
run retry_once 1 first-boot-only
echo "case retry_once: rig exit $RC after ${TOOK} s"
check retry_once "exit code 0 (the retry passed)" test "$RC" -eq 0
check retry_once "booted twice" test "$(count retry_once "booting ")" -eq 2
check retry_once "prints attempt 1's outcome" has retry_once "attempt 1: guest kernel failure"
check retry_once "prints attempt 2's outcome" has retry_once "attempt 2: the binary passed (exit 0)"
check retry_once "kept attempt 1's logs" test -f "$OUT/attempt-1/kernel-failure.txt"
finish_case retry_once

# 3. a failure of the binary itself is never retried
FAILED_CASE=0
run binary_failure 1 exit 3
echo "case binary_failure: rig exit $RC after ${TOOK} s"
check binary_failure "exit code 3 (the binary's own)" test "$RC" -eq 3
check binary_failure "booted once (never retried)" test "$(count binary_failure "booting ")" -eq 1
check binary_failure "no kernel failure reported" test "$(count binary_failure "GUEST KERNEL FAILURE")" -eq 0
finish_case binary_failure

echo "$passed passed, $failures failed"
((failures == 0))
