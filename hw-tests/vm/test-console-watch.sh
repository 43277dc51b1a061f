#!/usr/bin/env bash
# Tests the VM rig's console watcher (console-watch.sh) on recorded guest consoles, without booting anything:
# a stand-in "qemu" prints a console and then hangs, as the guest did after the krfcommd BUG; the watcher must
# classify the console and stop the stand-in within seconds. Runs in about 10 s; .ci/run runs it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
T0=${EPOCHREALTIME/./}
elapsed() { local us=$(( ${EPOCHREALTIME/./} - T0 )); printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10)); }
# shellcheck source=console-watch.sh
source "$HERE/console-watch.sh"
TRACE_GRACE_S=3
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
failures=0

# case NAME CONSOLE EXPECT(failure|clean) [EXPECTED_MATCH] [EXPECTED_WARNINGS]
case_() {
    local name=$1 console=$2 expect=$3 match=${4:-} warnings=${5:-0} out="$tmp/$1"
    mkdir -p "$out"; mkfifo "$out/fifo"
    # The stand-in guest: print the console a line at a time, then hang until stopped (exec: the pid that the
    # watcher kills is the one holding the pipe). A clean console ends by itself, as a guest that powers off.
    if [[ $expect == failure ]]; then
        ( while IFS= read -r l; do printf '%s\n' "$l"; sleep 0.01; done < "$console"; exec sleep 60 ) > "$out/fifo" &
    else
        ( while IFS= read -r l; do printf '%s\n' "$l"; sleep 0.01; done < "$console" ) > "$out/fifo" &
    fi
    local pid=$! start=${EPOCHREALTIME/./}
    watch_console "$pid" "$out" < "$out/fifo" > "$out/printed"
    wait "$pid" 2>/dev/null || true
    local took_ms=$(( (${EPOCHREALTIME/./} - start) / 1000 )) ok=1 why=""
    if [[ $expect == failure ]]; then
        [[ -f "$out/kernel-failure.txt" ]] || { ok=0; why+=" no kernel-failure.txt;"; }
        grep -qF -- "$match" "$out/kernel-failure.txt" 2>/dev/null || { ok=0; why+=" report lacks '$match';"; }
        # The whole trace is kept (up to the end marker) ...
        grep -qE -- '---\[ end|</TASK>' "$out/kernel-failure.txt" 2>/dev/null || { ok=0; why+=" trace cut short;"; }
        # ... and the hung stand-in is stopped within 10 s of the first failure line.
        local stop_ms; stop_ms=$(cat "$out/kernel-failure.stop-ms" 2>/dev/null || echo 999999)
        ((stop_ms <= 10000)) || { ok=0; why+=" stopped ${stop_ms} ms after the failure line;"; }
        ((took_ms <= 12000)) || { ok=0; why+=" watcher returned after ${took_ms} ms;"; }
    else
        [[ ! -f "$out/kernel-failure.txt" ]] || { ok=0; why+=" false kernel failure: $(sed -n 2p "$out/kernel-failure.txt");"; }
    fi
    local got_warn; got_warn=$(cat "$out/kernel-warnings.count" 2>/dev/null || echo 0)
    [[ $got_warn == "$warnings" ]] || { ok=0; why+=" warnings $got_warn, expected $warnings;"; }
    cmp -s <(tr -d '\r' < "$console") "$out/console.log" || { ok=0; why+=" console.log differs from the console;"; }
    if ((ok)); then
        echo "ok   $name ($expect, watcher returned after ${took_ms} ms)"
    else
        echo "FAIL $name:$why"; failures=$((failures + 1))
    fi
}

D="$HERE/testdata"
case_ krfcommd_list_del "$D/krfcommd-list-del.console" failure "list_del corruption"
case_ hung_task "$D/hung-task.console" failure "INFO: task kworker/u5:2:88 blocked for more than"
case_ panic "$D/panic.console" failure "Kernel panic - not syncing"
case_ clean_with_warning "$D/clean-with-warning.console" clean "" 1
passed=$(( 4 - failures ))
echo "$passed passed, $failures failed"
((failures == 0))
