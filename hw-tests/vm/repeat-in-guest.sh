#!/bin/bash
# Runs *in the VM rig's guest*: repeats one binary from /share N times in a single boot and prints a tally, for
# campaigns that look for rare kernel races (docs/vm-rig.md, "Kernels"). A guest kernel failure stops the
# guest (run.sh's console watcher), so the last "run K of N" line printed says how far it got.
#
#   COLINK_VM_FILES=target/release/examples/bluez_selftest \
#     hw-tests/vm/run.sh --kernel 6.1 -- hw-tests/vm/repeat-in-guest.sh 20 bluez_selftest --bytes 2000000
set -u
n=${1:?usage: repeat-in-guest.sh N BINARY [ARGS...]}; shift
bin=/share/${1:?binary name in /share}; shift
[ -x "$bin" ] || { echo "not executable in the guest: $bin"; exit 2; }
pass=0 fail=0
for i in $(seq 1 "$n"); do
    echo "=== run $i of $n: $(basename "$bin") $* (guest uptime $(cut -d' ' -f1 /proc/uptime) s)"
    if "$bin" "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "=== run $i FAILED"; fi
done
echo "=== $(basename "$bin"): $pass passed, $fail failed of $n runs in one boot ($(uname -r))"
[ "$fail" -eq 0 ]
