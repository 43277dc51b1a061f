#!/bin/sh
# Runs *in the VM rig's guest* (as the binary of hw-tests/vm/run.sh) to test the rig's kernel-failure handling;
# hw-tests/vm/test-detector.sh drives it. Never run it on a real machine: it crashes the kernel on purpose.
#
#   provoke-kernel-failure.sh panic-hang        panic the kernel and let it hang (kernel.panic = 0), as the
#                                                krfcommd BUG left the guest: only the console watcher stops it
#   provoke-kernel-failure.sh panic             panic the kernel with the rig's reboot-on-panic (QEMU exits)
#   provoke-kernel-failure.sh first-boot-only   panic-hang on the first attempt, pass on the retry
#   provoke-kernel-failure.sh exit N            no kernel failure: exit with N (a failure of the binary itself)
set -eu
mode=${1:-}
attempt=$(cat /share/attempt 2>/dev/null || echo 1)
[ "$(id -u)" = 0 ] && [ -w /proc/sysrq-trigger ] || { echo "needs root and /proc/sysrq-trigger"; exit 2; }
grep -q '^6\.' /etc/colink-vm-kernel 2>/dev/null || { echo "refusing to run outside the VM rig's guest"; exit 2; }

provoke() { # $1: kernel.panic value (0 = hang after the panic, -1 = reboot at once)
    echo 1 > /proc/sys/kernel/sysrq
    echo "$1" > /proc/sys/kernel/panic
    # A kernel line with the kernel's own timestamp marks the moment, for the detector test's timing.
    echo "colink-rig: provoking a guest kernel failure now (attempt $attempt)" > /dev/kmsg
    sync
    echo c > /proc/sysrq-trigger
    sleep 600 # not reached
}

case "$mode" in
    panic-hang) provoke 0 ;;
    panic) provoke -1 ;;
    first-boot-only)
        if [ "$attempt" = 1 ]; then provoke 0; fi
        echo "attempt $attempt: no kernel failure this time"
        exit 0 ;;
    exit) echo "exiting with ${2:?exit code} (a failure of the binary, not of the kernel)"; exit "$2" ;;
    *) echo "usage: $0 panic-hang|panic|first-boot-only|exit N"; exit 2 ;;
esac
