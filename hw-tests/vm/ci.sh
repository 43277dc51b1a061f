#!/usr/bin/env bash
# CI entry point: build colink-hw-tests on the host and run the whole suite in the VM rig (hci0 <-> hci1 on a
# Debian kernel: bookworm's 6.1 by default). Exits with the suite's exit code (125 when the guest failed to boot
# or set up, 123 when the guest kernel failed twice; see run.sh).
#   hw-tests/vm/ci.sh [--kernel 6.1|6.12|ABI] [suite args...]     e.g. hw-tests/vm/ci.sh --kernel 6.12 raw::l2cap
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# Release: SHA-256 and the copies of 10 MB per test are slow unoptimised under TCG.
KARGS=()
if [[ "${1:-}" == --kernel ]]; then KARGS=(--kernel "$2"); shift 2; fi
nice -n 10 cargo build --release -p colink-hw-tests
exec "$ROOT/hw-tests/vm/run.sh" "${KARGS[@]}" -- "$TARGET/release/colink-hw-tests" "$@"
