#!/usr/bin/env bash
# bench/monitor.sh [BACKUPS]: what the daemon's listener and `wayback check` cost.
# 1. wayback-bench renders one refresh for a synthetic repository of BACKUPS backups (10,000 by
#    default: an hourly backup for 14 months, a full every 24) and serves it on 127.0.0.1; curl
#    times 200 requests each of /metrics, / and /status.json (median and slowest).
# 2. A real cluster (pgbench scale 10) with a local repository and three backups: `wayback check`
#    run 20 times (median and slowest wall time).
# Needs root (runuser) and a release build (built if missing). env: PORT (5437), MPORT (9287).
set -euo pipefail
BACKUPS=${1:-10000}
SCALE=10
ROOT=${BENCH_ROOT:-/var/tmp/wayback-bench-monitor}
PORT=${PORT:-5437}
MPORT=${MPORT:-9287}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/monitor.sh: run as root (runuser)" >&2; exit 1; }
(cd "$HERE" && swift build -c release --product wayback-bench >/dev/null)
BENCH="$(cd "$HERE" && swift build -c release --show-bin-path)/wayback-bench"
WB_BUILT=$(wayback_release "$HERE")

stats() {  # median and max of the numbers on stdin (seconds), in ms
    sort -n | awk '{a[NR]=$1} END {printf "median %.2f ms, slowest %.2f ms (%d runs)", a[int((NR+1)/2)]*1000, a[NR]*1000, NR}'
}

echo "== the listener with $BACKUPS backups"
"$BENCH" monitor "$BACKUPS" "$MPORT" > /tmp/wayback-bench-monitor.out 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q serving /tmp/wayback-bench-monitor.out 2>/dev/null && break; sleep 0.1; done
head -1 /tmp/wayback-bench-monitor.out
for path in /metrics / /status.json; do
    for _ in $(seq 1 200); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$MPORT$path"; done | stats
    echo "  GET $path"
done
kill $SERVER 2>/dev/null || true

echo "== wayback check on a local repository (pgbench scale $SCALE, 3 backups)"
if [ -f "$ROOT/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop || true; fi
rm -rf "$ROOT"; mkdir -p "$ROOT"/{run,log,repo,lock,bin}
install -s -m 755 "$WB_BUILT" "$ROOT/bin/wayback"
WB=$ROOT/bin/wayback
chown -R postgres: "$ROOT"
trap 'kill $SERVER 2>/dev/null || true; as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m fast -w stop >/dev/null 2>&1 || true' EXIT
wbconf "$ROOT/wayback.yaml" "$ROOT/repo"
chown postgres: "$ROOT/wayback.yaml"
start_bench_cluster "$WB --config $ROOT/wayback.yaml wal-push %p"
as_pg "$WB" --config "$ROOT/wayback.yaml" init >/dev/null
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
for type in full incr incr; do as_pg "$WB" --config "$ROOT/wayback.yaml" backup --type $type >/dev/null; done
for _ in $(seq 1 20); do
    s=$(date +%s.%N); as_pg "$WB" --config "$ROOT/wayback.yaml" check >/dev/null || true; e=$(date +%s.%N)
    echo "$e - $s" | bc
done | stats
echo "  wayback check"
as_pg "$WB" --config "$ROOT/wayback.yaml" check | head -1
