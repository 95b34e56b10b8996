#!/usr/bin/env bash
# bench/dump.sh [SCALE]: `wayback dump` and `restore-dump` against pg_dump and pg_restore of the
# same data, on a pgbench database (scale 100 by default), cold cache, REPS rounds:
#
#   ref.dump.fd      pg_dump -Fd -j 2 -Z 0, then its files through zstd -1 (tar | zstd) into one file
#   ref.dump.fc      pg_dump -Fc -Z 0 | zstd -1 > file (the same stream, no parallel dump)
#   wayback.dump     wayback dump (dump.jobs 2: the directory format, each file stored as pg_dump closes it;
#                    the counts; compression) into the repository; the spool's peak is sampled
#   ref.restore      pg_restore -j 2 of the -Fd dump into an empty database, then count(*) of every table
#   ref.restore.fc   the same of the -Fc dump (the format wayback stores), from a plain file
#   wayback.restore  wayback restore-dump --jobs 2 (decode, pg_restore -j 2, the counts compared)
#
# Peak memory (max RSS) of each is recorded. Needs root (drop_caches, runuser) and a release build
# (built if missing). env: REPS (3), BENCH_ROOT (/var/tmp/wayback-bench-dump), PORT (5437).
set -euo pipefail
SCALE=${1:-100}
REPS=${REPS:-3}
ROOT=${BENCH_ROOT:-/var/tmp/wayback-bench-dump}
PORT=${PORT:-5437}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/dump.sh: run as root (drop_caches, runuser)" >&2; exit 1; }
WB_BUILT=$(wayback_release "$HERE")
WB=$ROOT/bin/wayback

if [ -f "$ROOT/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop || true; fi
rm -rf "$ROOT"; mkdir -p "$ROOT"/{run,log,repo,lock,bin,ref,spool}
install -s -m 755 "$WB_BUILT" "$WB"
chown -R postgres: "$ROOT"
trap 'as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m fast -w stop >/dev/null 2>&1 || true' EXIT
RES=$ROOT/log/results.txt; : > "$RES"
wbconf "$ROOT/wayback.yaml" "$ROOT/repo"
printf 'catalog: { enabled: false }\ndump: { databases: [bench], spool_dir: %s/spool }\n' "$ROOT" >> "$ROOT/wayback.yaml"
chown postgres: "$ROOT/wayback.yaml"
start_bench_cluster "/bin/true"
PSQL=("$PGBIN/psql" -X -q -A -t -h "$ROOT/run" -p "$PORT" -U postgres)
as_pg "$WB" --config "$ROOT/wayback.yaml" init >/dev/null
echo "== setup: pgbench scale $SCALE in database bench"
as_pg "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench" >/dev/null
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$ROOT/run" -p "$PORT" -U postgres bench >/dev/null 2>&1
as_pg "${PSQL[@]}" -d postgres -c "CHECKPOINT" >/dev/null
COUNT_ALL="SELECT sum(n) FROM (SELECT count(*) AS n FROM pgbench_accounts UNION ALL SELECT count(*) FROM pgbench_branches UNION ALL SELECT count(*) FROM pgbench_tellers UNION ALL SELECT count(*) FROM pgbench_history) c"
URL="postgresql://postgres@/restored?host=$ROOT/run&port=$PORT"
for r in $(seq 1 "$REPS"); do
    echo "-- round $r"
    rm -rf "$ROOT/ref/fd" "$ROOT/ref/"*.zst "$ROOT/ref/fc.dump"; rm -rf "$ROOT/repo/bench/dumps"
    cold; timed ref.dump.fd -- runuser -u postgres -- bash -c "'$PGBIN/pg_dump' -h '$ROOT/run' -p $PORT -U postgres -Fd -j 2 -Z 0 -f '$ROOT/ref/fd' bench && tar -cf - -C '$ROOT/ref' fd | zstd -1 -q -o '$ROOT/ref/fd.tar.zst'"
    cold; timed ref.dump.fc -- runuser -u postgres -- bash -c "'$PGBIN/pg_dump' -h '$ROOT/run' -p $PORT -U postgres -Fc -Z 0 bench | zstd -1 -q -o '$ROOT/ref/fc.zst'"
    as_pg zstd -d -q -f "$ROOT/ref/fc.zst" -o "$ROOT/ref/fc.dump"
    # The spool's peak while the dump runs (sampled every 0.2 s).
    ( peak=0; while [ ! -f "$ROOT/log/dump.done" ]; do s=$(du -sb "$ROOT/spool" 2>/dev/null | cut -f1); [ "${s:-0}" -gt "$peak" ] && peak=$s; sleep 0.2; done; echo "$peak" >> "$ROOT/log/spool-peak.txt" ) &
    cold; timed wayback.dump -- runuser -u postgres -- "$WB" --config "$ROOT/wayback.yaml" dump --json
    touch "$ROOT/log/dump.done"; wait; rm -f "$ROOT/log/dump.done"
    ID=$(ls "$ROOT/repo/bench/dumps" | tail -1)
    as_pg "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS restored" -c "CREATE DATABASE restored" >/dev/null
    cold; timed ref.restore -- runuser -u postgres -- bash -c "'$PGBIN/pg_restore' -h '$ROOT/run' -p $PORT -U postgres -j 2 -d restored '$ROOT/ref/fd' && '$PGBIN/psql' -X -q -A -t -h '$ROOT/run' -p $PORT -U postgres -d restored -c '$COUNT_ALL' >/dev/null"
    as_pg "${PSQL[@]}" -d postgres -c "DROP DATABASE restored" -c "CREATE DATABASE restored" >/dev/null
    cold; timed ref.restore.fc -- runuser -u postgres -- bash -c "'$PGBIN/pg_restore' -h '$ROOT/run' -p $PORT -U postgres -j 2 -d restored '$ROOT/ref/fc.dump' && '$PGBIN/psql' -X -q -A -t -h '$ROOT/run' -p $PORT -U postgres -d restored -c '$COUNT_ALL' >/dev/null"
    as_pg "${PSQL[@]}" -d postgres -c "DROP DATABASE restored" -c "CREATE DATABASE restored" >/dev/null
    cold; timed wayback.restore -- runuser -u postgres -- "$WB" --config "$ROOT/wayback.yaml" restore-dump --backup "$ID" --jobs 2 --into "$URL" --json
done
du -sb "$ROOT/ref/fd.tar.zst" "$ROOT/ref/fc.zst" "$ROOT/repo/bench/dumps" > "$ROOT/log/sizes.txt"
echo "spool peak during wayback dump: $(sort -n "$ROOT/log/spool-peak.txt" | tail -1) bytes (the plain dump: $(du -sb "$ROOT/ref/fd" | cut -f1) bytes)"

python3 - "$RES" "$ROOT/log/sizes.txt" <<'PY'
import statistics, sys
t, rss = {}, {}
for line in open(sys.argv[1]):
    label, secs, kb = line.split()
    t.setdefault(label, []).append(float(secs)); rss[label] = max(rss.get(label, 0), int(kb))
med = {k: statistics.median(v) for k, v in t.items()}
sizes = [l.split() for l in open(sys.argv[2])]
print("| step | median s | ratio | max RSS MiB |\n|---|---|---|---|")
med.setdefault("wayback.restore/fc", 0)
for k, ref in (("ref.dump.fd", None), ("ref.dump.fc", "ref.dump.fd"), ("wayback.dump", "ref.dump.fd"), ("ref.restore", None),
               ("ref.restore.fc", "ref.restore"), ("wayback.restore", "ref.restore")):
    ratio = f"{med[k] / med[ref]:.2f}x {ref}" if ref else ""
    print(f"| {k} | {med[k]:.2f} | {ratio} | {rss[k] / 1024:.0f} |")
print("\nstored bytes: " + ", ".join(f"{p.split('/')[-1]} {int(b) / 1e6:.0f} MB" for b, p in sizes))
PY
