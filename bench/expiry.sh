#!/usr/bin/env bash
# bench/expiry.sh [BACKUPS] [SEGMENTS]: how long `expire` takes to plan a large repository
# (synthetic: 20,000 backups and 1,000,000 archived WAL segments by default), release build.
# Prints the seconds of parsing the listings, planning, and choosing the WAL to remove.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
swift build -c release --product wayback-bench >/dev/null
"$(swift build -c release --show-bin-path)/wayback-bench" expiry "${1:-20000}" "${2:-1000000}"
