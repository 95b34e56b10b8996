#!/usr/bin/env bash
# bench/push-ahead.sh [SCALE]: how long PostgreSQL waits for its archive_command, side by side in
# one run, while `pgbench -i -s SCALE` writes WAL (SCALE 130: about 100 segments), each mode on a
# fresh cluster with the same settings, ROUNDS rounds interleaved:
#
#   pgbackrest.sync   pgbackrest archive-push (archive-async=n)
#   pgbackrest.async  pgbackrest archive-push with archive-async=y (spool, process-max=2)
#   wayback.sync      wayback wal-push, no daemon (today's path)
#   wayback.ahead     wayback wal-push with `wayback daemon` running (it stores each segment as
#                     soon as PostgreSQL marks it ready; wal-push checks and returns)
#
# Each call is timed by a wrapper around the command (bash $EPOCHREALTIME, outside the command).
# Reported per mode: calls, mean, median and 95th percentile of the call, and how long after
# pgbench ended the last segment was archived. Then the backlog case: with archiving paused
# (archive_command failing) until BACKLOG segments are ready, the time to archive them all once it
# is back.
# Needs root (runuser, setpriv), pgbackrest (installed if missing), a release build (built if
# missing). env: ROUNDS (1), BACKLOG (30), BENCH_ROOT (/var/tmp/wayback-bench-ahead), PORT (5435).
set -euo pipefail
SCALE=${1:-130}
ROUNDS=${ROUNDS:-1}
BACKLOG=${BACKLOG:-30}
ROOT=${BENCH_ROOT:-/var/tmp/wayback-bench-ahead}
PORT=${PORT:-5435}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/push-ahead.sh: run as root" >&2; exit 1; }
command -v pgbackrest >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }
WB_BUILT=$(wayback_release "$HERE")

stop_all() {
    [ -f "$ROOT/pgdata/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop >/dev/null 2>&1 || true
    pkill -f "$ROOT/bin/wayback --config $ROOT/wayback.yaml daemon" 2>/dev/null || true
    pkill -u postgres -f "pgbackrest.*$ROOT" 2>/dev/null || true
}
trap stop_all EXIT
stop_all
rm -rf "$ROOT"; mkdir -p "$ROOT"/{bin,log,run,lock}
install -s -m 755 "$WB_BUILT" "$ROOT/bin/wayback"
WB=$ROOT/bin/wayback
cat > "$ROOT/bin/timed" <<'SH'
#!/bin/bash
# timed LOG COMMAND...: runs COMMAND, appends "start end status" to LOG.
log=$1; shift
t0=$EPOCHREALTIME; "$@"; rc=$?; t1=$EPOCHREALTIME
echo "$t0 $t1 $rc" >> "$log"; exit $rc
SH
chmod 755 "$ROOT/bin/timed"
chown -R postgres: "$ROOT"
PSQL=("$PGBIN/psql" -X -q -A -t -h "$ROOT/run" -p "$PORT" -U postgres)

# setup MODE: a fresh cluster archiving with MODE's command, its repository, its daemon.
setup() {
    local mode=$1 cmd
    stop_all
    rm -rf "$ROOT/pgdata" "$ROOT/repo" "$ROOT/spool" "$ROOT/lock"/*
    as_pg mkdir -p "$ROOT/repo" "$ROOT/spool"
    pgbackrest_conf "$ROOT/pgbackrest.conf" "$ROOT/repo"
    wbconf "$ROOT/wayback.yaml" "$ROOT/repo"
    cat >> "$ROOT/wayback.yaml" <<YAML
schedule: { full: null, incr: null, expire: null }
YAML
    case $mode in
        pgbackrest.async) sed -i "s|archive-async=n|archive-async=y\nspool-path=$ROOT/spool|" "$ROOT/pgbackrest.conf" ;;
    esac
    chown postgres: "$ROOT/pgbackrest.conf" "$ROOT/wayback.yaml"
    case $mode in
        pgbackrest.*) cmd="pgbackrest --config=$ROOT/pgbackrest.conf --stanza=bench archive-push %p" ;;
        wayback.*) cmd="$WB --config $ROOT/wayback.yaml wal-push %p" ;;
    esac
    # Archiving paused until the repository exists: the command fails while $ROOT/paused exists.
    as_pg touch "$ROOT/paused"
    start_bench_cluster "test ! -f $ROOT/paused && $ROOT/bin/timed $ROOT/log/$mode.calls $cmd"
    case $mode in
        pgbackrest.*) as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench stanza-create >/dev/null ;;
        wayback.*) as_pg "$WB" --config "$ROOT/wayback.yaml" init >/dev/null ;;
    esac
    if [ "$mode" = wayback.ahead ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$WB" --config "$ROOT/wayback.yaml" daemon >>"$ROOT/log/daemon.log" 2>&1 &
        until [ -f "$ROOT/pgdata/pg_wal/wayback-ahead/.lock" ]; do sleep 0.2; done
    fi
}

# wait_archived: until the segment of the last switch is archived.
wait_archived() {
    local last
    # A record first, so that the switch makes a new segment and wakes the archiver.
    last=$(as_pg "${PSQL[@]}" -c "SELECT pg_logical_emit_message(false, 'bench', 'x')" -c "SELECT pg_walfile_name(pg_switch_wal())" | tail -1)
    until [ "$(as_pg "${PSQL[@]}" -c "SELECT coalesce(last_archived_wal >= '$last', false) FROM pg_stat_archiver")" = t ]; do sleep 0.05; done
}

RES=$ROOT/log/results.txt; : > "$RES"
MODES=(pgbackrest.sync pgbackrest.async wayback.sync wayback.ahead)
for round in $(seq "$ROUNDS"); do
    for mode in "${MODES[@]}"; do
        echo "== round $round: $mode (pgbench -i -s $SCALE)"
        setup "$mode"
        rm -f "$ROOT/paused"; wait_archived; : > "$ROOT/log/$mode.calls"
        as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
        end=$EPOCHREALTIME; wait_archived; lag=$(awk -v a="$EPOCHREALTIME" -v b="$end" 'BEGIN { print a - b }')
        awk -v m="$mode" -v lag="$lag" '$3 == 0 { print m, "call", ($2 - $1) * 1000 } END { print m, "lag", lag * 1000 }' "$ROOT/log/$mode.calls" >> "$RES"

        echo "== round $round: $mode, a backlog of $BACKLOG segments"
        as_pg touch "$ROOT/paused"
        as_pg "${PSQL[@]}" -c "CREATE TABLE IF NOT EXISTS backlog (x text)"
        for _ in $(seq "$BACKLOG"); do
            as_pg "${PSQL[@]}" -c "INSERT INTO backlog SELECT md5(g::text) FROM generate_series(1, 60000) g; SELECT pg_switch_wal()" >/dev/null
        done
        # The daemon (wayback.ahead) stores them meanwhile, as it would while archive_command fails.
        sleep 5
        start=$EPOCHREALTIME; rm -f "$ROOT/paused"; wait_archived
        echo "$mode backlog $(awk -v a="$EPOCHREALTIME" -v b="$start" 'BEGIN { print (a - b) * 1000 }')" >> "$RES"
    done
done
stop_all

python3 - "$RES" "$BACKLOG" <<'PY'
import sys, statistics
calls, lags, backlog = {}, {}, {}
for line in open(sys.argv[1]):
    mode, kind, value = line.split()
    {"call": lambda: calls.setdefault(mode, []).append(float(value)),
     "lag": lambda: lags.setdefault(mode, []).append(float(value)),
     "backlog": lambda: backlog.setdefault(mode, []).append(float(value))}[kind]()
def p95(v): v = sorted(v); return v[min(len(v) - 1, int(0.95 * len(v)))]
print(f"\n| mode | calls | mean ms | median ms | p95 ms | last segment archived after pgbench ms | backlog of {sys.argv[2]} archived in ms |")
print("|---|---|---|---|---|---|---|")
for m in calls:
    v = calls[m]
    print(f"| {m} | {len(v)} | {statistics.mean(v):.1f} | {statistics.median(v):.1f} | {p95(v):.1f} | {statistics.median(lags[m]):.0f} | {statistics.median(backlog[m]):.0f} |")
mean = {m: statistics.mean(v) for m, v in calls.items()}
for ref in ("pgbackrest.sync", "pgbackrest.async"):
    print(f"- wayback.ahead / {ref}: mean call {mean['wayback.ahead'] / mean[ref]:.2f}x, backlog {statistics.median(backlog['wayback.ahead']) / statistics.median(backlog[ref]):.2f}x")
print(f"- wayback.sync / pgbackrest.sync: mean call {mean['wayback.sync'] / mean['pgbackrest.sync']:.2f}x")
PY
