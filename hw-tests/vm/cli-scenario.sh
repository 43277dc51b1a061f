#!/usr/bin/env bash
# The `colink` command on the real Linux Bluetooth stack: builds the CLI (release), makes a 320x240 PNG and runs
# cli-in-guest.sh in the VM rig, where `serve` on hci1 and scan/pair/send/stream on hci0 run as separate
# processes. Exit code: the scenario's (0 when every step passed; 123/125 as run.sh).
#   hw-tests/vm/cli-scenario.sh [--kernel 6.1|6.12|ABI]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
KARGS=()
if [[ "${1:-}" == --kernel ]]; then KARGS=(--kernel "$2"); shift 2; fi
nice -n 10 cargo build --release --locked -p colink-cli
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# A 320x240 RGB PNG (a colour gradient), written with Python's standard library only.
python3 - "$tmp/pattern.png" <<'PY'
import struct, sys, zlib
w, h = 320, 240
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 255 // w, y * 255 // h, 128)) for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
cp "$TARGET/release/colink" "$tmp/colink"
rc=0
COLINK_VM_FILES="$tmp/colink $tmp/pattern.png" "$ROOT/hw-tests/vm/run.sh" "${KARGS[@]}" -- \
    "$ROOT/hw-tests/vm/cli-in-guest.sh" || rc=$?
exit "$rc"
