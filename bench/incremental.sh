#!/usr/bin/env bash
# bench/incremental.sh [SCALE]: incremental backups and encryption, Wayback against pgBackRest 2.45
# on the same pgbench cluster, interleaved round by round, cold cache, medians.
#
#   encryption : wayback full backup into a plain repository / into an encrypted one (key file)
#   incr       : after 20,000 pgbench transactions (-c 2 -t 10000) since the last backup:
#                pgbackrest backup --type=incr / wayback backup --type incr, time and bytes stored
#                (pgBackRest: du of its backup folder; Wayback: its packs, and with the backup's
#                own WAL copies, which pgBackRest keeps in its archive instead)
#   restore    : the latest incr (its chain) into an empty directory, + sync
#
# Needs root (drop_caches, runuser), pgbackrest (Debian package; installed if missing) and a
# release build of wayback (built if missing). env: REPS (3), TX (20000), BENCH_ROOT
# (/var/tmp/wayback-incr-bench), PORT (5435), KEEP=1 keeps everything.
set -euo pipefail
SCALE=${1:-100}
REPS=${REPS:-3}
TX=${TX:-20000}
ROOT=${BENCH_ROOT:-/var/tmp/wayback-incr-bench}
PORT=${PORT:-5435}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/incremental.sh: run as root (drop_caches, runuser)" >&2; exit 1; }
command -v pgbackrest >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }
WB_BUILT=$(wayback_release "$HERE")

echo "== setup: pgbench scale $SCALE in $ROOT"
if [ -f "$ROOT/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop || true; fi
rm -rf "$ROOT"; mkdir -p "$ROOT"/{run,log,pbr-repo,wb-repo,wb-enc-repo,lock,bin}
install -s -m 755 "$WB_BUILT" "$ROOT/bin/wayback"; WB=$ROOT/bin/wayback
head -c 32 /dev/urandom > "$ROOT/repo.key"; chmod 600 "$ROOT/repo.key"
chown -R postgres: "$ROOT"
RES=$ROOT/log/results.txt; BYTES=$ROOT/log/bytes.txt; : > "$RES"; : > "$BYTES"
pgbackrest_conf "$ROOT/pgbackrest.conf" "$ROOT/pbr-repo"
wbconf "$ROOT/wayback.yaml" "$ROOT/wb-repo"
wbconf "$ROOT/wayback-enc.yaml" "$ROOT/wb-enc-repo" "    encryption: { key_file: $ROOT/repo.key }"
chown postgres: "$ROOT"/*.conf "$ROOT"/*.yaml
start_bench_cluster "pgbackrest --config=$ROOT/pgbackrest.conf --stanza=bench archive-push %p && $WB --config $ROOT/wayback.yaml wal-push %p && $WB --config $ROOT/wayback-enc.yaml wal-push %p"
trap 'as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop >/dev/null 2>&1 || true' EXIT
PSQL=("$PGBIN/psql" -X -q -A -t -h "$ROOT/run" -p "$PORT" -U postgres)
as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench stanza-create
as_pg "$WB" --config "$ROOT/wayback.yaml" init >/dev/null
as_pg "$WB" --config "$ROOT/wayback-enc.yaml" init >/dev/null
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
as_pg "${PSQL[@]}" -c "CHECKPOINT" >/dev/null
DATA_BYTES=$(du -sb --exclude=pg_wal "$ROOT/pgdata" | cut -f1)

echo "== full backups (the base of the first incr), then encryption rounds: $REPS"
as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=full backup
for r in $(seq 1 "$REPS"); do
    echo "-- encryption round $r"
    cold; timed wayback.full_plain -- runuser -u postgres -- "$WB" --config "$ROOT/wayback.yaml" backup
    cold; timed wayback.full_encrypted -- runuser -u postgres -- "$WB" --config "$ROOT/wayback-enc.yaml" backup
done

newest() { ls "$1" | grep -E "$2" | sort | tail -1; }
echo "== incremental rounds: $REPS x $TX pgbench transactions, then an incr with each tool"
for r in $(seq 1 "$REPS"); do
    echo "-- incr round $r"
    as_pg "$PGBIN/pgbench" -n -c 2 -t $((TX / 2)) -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
    cold; timed pgbackrest.incr -- runuser -u postgres -- pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=incr backup
    cold; timed wayback.incr -- runuser -u postgres -- "$WB" --config "$ROOT/wayback.yaml" backup --type incr
    pb=$(newest "$ROOT/pbr-repo/backup/bench" 'I$')
    wb=$(newest "$ROOT/wb-repo/bench/backups" 'I$')
    echo "pgbackrest.incr $(du -sb "$ROOT/pbr-repo/backup/bench/$pb" | cut -f1)" >> "$BYTES"
    echo "wayback.incr_packs $(du -sb "$ROOT/wb-repo/bench/backups/$wb/pack" | cut -f1)" >> "$BYTES"
    echo "wayback.incr_with_wal $(du -sb "$ROOT/wb-repo/bench/backups/$wb" | cut -f1)" >> "$BYTES"
done

echo "== restore of the latest incr: $REPS rounds"
for r in $(seq 1 "$REPS"); do
    rm -rf "$ROOT/r-pbr" "$ROOT/r-wb"; mkdir -p "$ROOT/r-pbr"; chown postgres: "$ROOT/r-pbr"
    cold; timed pgbackrest.restore_incr -- runuser -u postgres -- bash -c "pgbackrest --config='$ROOT/pgbackrest.conf' --stanza=bench --pg1-path='$ROOT/r-pbr' restore && sync"
    cold; timed wayback.restore_incr -- runuser -u postgres -- bash -c "'$WB' --config '$ROOT/wayback.yaml' restore --target-dir '$ROOT/r-wb' && sync"
done
rm -rf "$ROOT/r-pbr" "$ROOT/r-wb"

python3 - "$RES" "$BYTES" "$DATA_BYTES" <<'PY'
import sys, statistics as st
rows, sizes = {}, {}
for line in open(sys.argv[1]):
    k, s, rss = line.split()
    rows.setdefault(k, []).append((float(s), int(rss)))
for line in open(sys.argv[2]):
    k, b = line.split()
    sizes.setdefault(k, []).append(int(b))
med = {k: st.median(s for s, _ in v) for k, v in rows.items()}
print(f"\n| step | n | median s | min-max s | peak RSS MiB |\n|---|---|---|---|---|")
for k, v in rows.items():
    ss = [s for s, _ in v]
    print(f"| {k} | {len(v)} | {med[k]:.2f} | {min(ss):.2f}-{max(ss):.2f} | {max(r for _, r in v) / 1024:.0f} |")
print(f"\n| stored by each incr | median MB | per round MB |\n|---|---|---|")
for k, v in sizes.items():
    print(f"| {k} | {st.median(v) / 1e6:.1f} | {', '.join(f'{b / 1e6:.1f}' for b in v)} |")
print(f"\nData: {int(sys.argv[3]) / 1e6:.0f} MB without pg_wal.")
def ratio(a, b, goal):
    if a in med and b in med: print(f"- {a} / {b}: {med[a] / med[b]:.2f}x (goal: {goal})")
ratio("wayback.incr", "pgbackrest.incr", "<= 0.5x")
for k in ("wayback.incr_packs", "wayback.incr_with_wal"):
    if k in sizes and "pgbackrest.incr" in sizes:
        print(f"- bytes {k} / pgbackrest.incr: {st.median(sizes[k]) / st.median(sizes['pgbackrest.incr']):.2f}x (goal: <= 0.25x)")
if "wayback.full_encrypted" in med:
    print(f"- encryption cost: {100 * (med['wayback.full_encrypted'] / med['wayback.full_plain'] - 1):+.1f} % of the full backup time (goal: <= 15 %)")
ratio("wayback.restore_incr", "pgbackrest.restore_incr", "restore of the incr chain")
PY
[ "${KEEP:-0}" = 1 ] || rm -rf "$ROOT"
