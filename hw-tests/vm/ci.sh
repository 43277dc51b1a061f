#!/usr/bin/env bash
# CI entry point: build colink-hw-tests on the host and run the whole suite in the VM rig (hci0 <-> hci1 on
# Debian bookworm's kernel). Exits with the suite's exit code (125 when the guest failed to boot or set up).
#   hw-tests/vm/ci.sh [suite args...]     e.g. hw-tests/vm/ci.sh raw::l2cap
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# Release: SHA-256 and the copies of 10 MB per test are slow unoptimised under TCG.
nice -n 10 cargo build --release -p colink-hw-tests
exec "$ROOT/hw-tests/vm/run.sh" -- "$TARGET/release/colink-hw-tests" "$@"
