#!/usr/bin/env bash
# bench/daemon.sh [SECONDS]: what an idle `wayback daemon` costs: CPU seconds used and memory
# (RSS, peak RSS) after SECONDS (60) with no job due, on a throwaway cluster and local repository.
# Needs root (runs the cluster and the daemon as postgres) and a release build (built if missing).
set -euo pipefail
WAIT=${1:-60}
HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${BENCH_ROOT:-/var/tmp/wayback-bench-daemon}
PORT=${PORT:-5434}
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/daemon.sh: run as root" >&2; exit 1; }
WB=$(wayback_release "$HERE")
rm -rf "$ROOT"; mkdir -p "$ROOT"; chown postgres: "$ROOT"; chmod 700 "$ROOT"
cp "$WB" "$ROOT/wayback"; chmod 755 "$ROOT/wayback"
as_pg "$PGBIN/initdb" -D "$ROOT/pgdata" -A trust -U postgres >/dev/null
cat > "$ROOT/wayback.yaml" <<YAML
cluster:
  name: main
  pgdata: $ROOT/pgdata
  connection: postgresql://postgres@/postgres?host=$ROOT&port=$PORT
repositories:
  - name: local
    type: local
    path: $ROOT/repository
lock_path: $ROOT/locks
log_level: warning
schedule:
  full: "0 2 1 1 *"
  incr: null
  expire: null
YAML
chown postgres: "$ROOT/wayback.yaml"; chmod 600 "$ROOT/wayback.yaml"
cat >> "$ROOT/pgdata/postgresql.conf" <<CONF
wal_level = replica
archive_mode = on
archive_command = '$ROOT/wayback --config $ROOT/wayback.yaml wal-push %p'
listen_addresses = ''
unix_socket_directories = '$ROOT'
port = $PORT
CONF
as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -l "$ROOT/pg.log" -w start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m fast -w stop >/dev/null 2>&1 || true' EXIT
as_pg "$ROOT/wayback" --config "$ROOT/wayback.yaml" init >/dev/null
as_pg "$ROOT/wayback" --config "$ROOT/wayback.yaml" daemon 2>"$ROOT/daemon.log" &
sleep 3
PID=$(pgrep -u postgres -f "wayback --config $ROOT/wayback.yaml daemon" | head -1)
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
start=$(cpu)
sleep "$WAIT"
end=$(cpu)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status"); hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$PID/status")
kill -TERM "$PID"; wait || true
echo "idle daemon over ${WAIT} s: CPU $(awk -v a="$start" -v b="$end" -v t="$ticks" 'BEGIN { printf "%.2f", (b - a) / t }') s, RSS $((rss / 1024)) MiB, peak RSS $((hwm / 1024)) MiB, $threads threads"
