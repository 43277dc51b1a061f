#!/usr/bin/env bash
# The VM rig's guest console watcher, sourced by run.sh (and by test-console-watch.sh, which feeds it recorded
# consoles). `watch_console QEMU_PID OUTDIR` reads the console on stdin until EOF; on a kernel failure it writes
# OUTDIR/kernel-failure.txt and stops the guest by sending SIGTERM to QEMU_PID once the trace is complete.
# Needs: elapsed (run.sh's run-time clock, printed in the report). Safe under `set -e`.

# Kernel reports that mean the guest kernel is broken: after any of them the rig's result is meaningless and the
# guest often hangs (a BUG in krfcommd held locks the test then waited on until the 900 s timeout). Matched only
# in kernel lines, which carry a printk timestamp ("[   12.345678] "; printk.time=1 is on the command line).
KERNEL_FAILURE_RE='\[ *[0-9]+\.[0-9]+\] .*(Kernel panic - not syncing|kernel BUG at|BUG: |Oops: |Oops\[|general protection fault|list_(add|del) corruption|INFO: task .* blocked for more than|rcu: INFO: .* detected stall|rcu_.*self-detected stall|watchdog: BUG: soft lockup)'
# Warnings are printed and counted but do not stop the run (the kernel carries on after a WARN).
KERNEL_WARNING_RE='\[ *[0-9]+\.[0-9]+\] WARNING: '
# The end of a trace: stop collecting early.
TRACE_END_RE='(---\[ end trace|---\[ end Kernel panic)'
# How long to keep collecting the trace after the first failure line before the guest is stopped.
TRACE_GRACE_S="${COLINK_VM_TRACE_GRACE:-3}"

now_us() { echo "${EPOCHREALTIME/./}"; }

# watch_console QEMU_PID OUTDIR: reads the guest console on stdin until EOF. Keeps the raw console in
# OUTDIR/console.log, prints it without escape sequences, and on a kernel failure writes
# OUTDIR/kernel-failure.txt (trace and timings) and stops qemu once the trace is complete (or TRACE_GRACE_S).
watch_console() {
    local qpid=$1 out=$2 line clean first_us=0 warn=0 stopped=0 stopped_us=0
    : > "$out/console.log"
    while true; do
        if ((first_us && !stopped)); then
            # collecting the trace: wait at most until the grace ends
            local left_us=$(( first_us + TRACE_GRACE_S * 1000000 - $(now_us) ))
            if ((left_us <= 0)); then stop_guest; continue; fi
            local st=0
            IFS= read -r -t "$((left_us / 1000000)).$(printf '%06d' $((left_us % 1000000)))" line || st=$?
            if ((st > 128)); then stop_guest; continue; fi
            ((st == 0)) || { [[ -n "$line" ]] || break; }
        else
            IFS= read -r line || { [[ -n "$line" ]] || break; }
        fi
        printf '%s\n' "$line" >> "$out/console.log"
        clean="${line//$'\r'/}"
        if [[ "$clean" == *$'\e'* ]]; then
            clean="$(printf '%s' "$clean" | sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g')"
        fi
        printf '%s\n' "$clean"
        if ((first_us)); then
            ((stopped)) || printf '%s\n' "$clean" >> "$out/kernel-failure.txt"
            if ! ((stopped)) && [[ "$clean" =~ $TRACE_END_RE ]]; then stop_guest; fi
        elif [[ "$clean" =~ $KERNEL_FAILURE_RE ]]; then
            first_us=$(now_us)
            {
                echo "first kernel failure line at host $(date -u +%H:%M:%S.%N | cut -c1-12) (run time $(elapsed) s):"
                echo "  ${BASH_REMATCH[1]}"
                echo "--- console from the first failure line ---"
                printf '%s\n' "$clean"
            } > "$out/kernel-failure.txt"
            printf '[vm-rig] guest kernel failure detected (%s): collecting the trace, stopping the guest\n' \
                "${BASH_REMATCH[1]}" >&2
        elif [[ "$clean" =~ $KERNEL_WARNING_RE ]]; then
            warn=$((warn + 1))
            printf '%s\n' "$clean" >> "$out/kernel-warnings.txt"
        fi
    done
    if ((first_us)); then
        local took_ms=$(( (stopped_us - first_us) / 1000 ))
        ((stopped)) || took_ms=$(( ($(now_us) - first_us) / 1000 ))
        echo "--- guest stopped $((took_ms / 1000)).$(printf '%03d' $((took_ms % 1000))) s after the first failure line ---" \
            >> "$out/kernel-failure.txt"
        echo "$took_ms" > "$out/kernel-failure.stop-ms"
    fi
    ((warn == 0)) || echo "$warn" > "$out/kernel-warnings.count"
    return 0
}
stop_guest() {
    stopped=1
    stopped_us=$(now_us)
    # qpid is timeout(1)'s pid: it passes the TERM on to qemu and exits.
    kill -TERM "$qpid" 2>/dev/null || true
}

