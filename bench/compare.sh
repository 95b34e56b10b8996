#!/usr/bin/env bash
# bench/compare.sh [SCALE]: Wayback against pgBackRest and the physical limits, side by side on
# the same pgbench cluster, interleaved round by round (the machine's speed drifts), cold cache.
#
#   full backup   : tar | zstd -1 -T2 (reference) / pgbackrest backup --type=full / wayback backup
#   restore       : zstd -d | tar x (reference) / pgbackrest restore / wayback restore, into an
#                   empty directory, + sync
#   wal-push      : SEGMENTS real 16 MiB segments pushed one call each (pgbackrest archive-push,
#                   synchronous / wayback wal-push) into fresh repositories
#   PITR          : end to end (restore + start + replay to a time target + promote) after
#                   PITR_TX pgbench transactions: pgbackrest restore --type=time + pg_ctl start /
#                   wayback restore --to-time --target-action promote --start
#   peak memory   : max RSS of wayback backup and restore (GNU time)
#
# Needs root (drop_caches, runuser), pgbackrest (Debian package; installed if missing) and a
# release build of wayback (built if missing). env: REPS (3), SEGMENTS (30), PITR_TX (40000), PITR_ONLY=1
# (only the PITR comparison), BENCH_ROOT
# (/var/tmp/wayback-bench), PORT (5433), KEEP=1 keeps the cluster and repositories.
set -euo pipefail
SCALE=${1:-100}
REPS=${REPS:-3}
SEGMENTS=${SEGMENTS:-30}
ROOT=${BENCH_ROOT:-/var/tmp/wayback-bench}
PORT=${PORT:-5433}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/compare.sh: run as root (drop_caches, runuser)" >&2; exit 1; }
command -v pgbackrest >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }
WB_BUILT=$(wayback_release "$HERE")
WB=$ROOT/bin/wayback       # installed stripped, as in production (README: install -s)

echo "== setup: pgbench scale $SCALE in $ROOT"
if [ -f "$ROOT/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop || true; fi
rm -rf "$ROOT"; mkdir -p "$ROOT"/{run,log,pbr-repo,pbr-push-repo,wb-repo,wb-push-repo,stage,fake/global,lock}
mkdir -p "$ROOT/bin"; install -s -m 755 "$WB_BUILT" "$WB"
chown -R postgres: "$ROOT"
RES=$ROOT/log/results.txt; : > "$RES"
pgbackrest_conf "$ROOT/pgbackrest.conf" "$ROOT/pbr-repo"
cat >> "$ROOT/pgbackrest.conf" <<CONF
[push]
pg1-path=$ROOT/fake
CONF
sed "s|repo1-path=$ROOT/pbr-repo|repo1-path=$ROOT/pbr-push-repo|" "$ROOT/pgbackrest.conf" > "$ROOT/pgbackrest-push.conf"
wbconf "$ROOT/wayback.yaml" "$ROOT/wb-repo"; wbconf "$ROOT/wayback-push.yaml" "$ROOT/wb-push-repo"
chown postgres: "$ROOT"/*.conf "$ROOT"/*.yaml
start_bench_cluster "pgbackrest --config=$ROOT/pgbackrest.conf --stanza=bench archive-push %p && $WB --config $ROOT/wayback.yaml wal-push %p"
PSQL=("$PGBIN/psql" -X -q -A -t -h "$ROOT/run" -p "$PORT" -U postgres)
as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench stanza-create
as_pg "$WB" --config "$ROOT/wayback.yaml" init >/dev/null
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
as_pg "${PSQL[@]}" -c "CHECKPOINT" >/dev/null
DATA_BYTES=$(du -sb --exclude=pg_wal "$ROOT/pgdata" | cut -f1)

# Segments for the push test: real WAL of this cluster, fetched back from the archive.
as_pg "${PSQL[@]}" -c "SELECT pg_switch_wal()" >/dev/null; sleep 2
for s in $(ls "$ROOT/wb-repo/bench/wal/"*/ | grep -E '^[0-9A-F]{24}$' | head -n "$SEGMENTS"); do
    as_pg "$WB" --config "$ROOT/wayback.yaml" wal-fetch "$s" "$ROOT/stage/$s"
done
cp "$ROOT/pgdata/global/pg_control" "$ROOT/fake/global/"; cp "$ROOT/pgdata/PG_VERSION" "$ROOT/fake/"; chown -R postgres: "$ROOT/fake"
NSEG=$(ls "$ROOT/stage" | wc -l)

echo "== rounds: $REPS (cold cache), data ${DATA_BYTES} bytes, $NSEG segments"
for r in $(seq 1 "$REPS"); do
    echo "-- round $r"
    if [ "${PITR_ONLY:-0}" = 1 ]; then   # only the backups the PITR step needs, untimed
        as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=full backup
        as_pg "$WB" --config "$ROOT/wayback.yaml" backup >/dev/null
        continue
    fi
    cold; timed ref.tar_zstd -- bash -c "tar cf - --exclude='./pg_wal/0*' --exclude='./pg_wal/archive_status/*' --exclude=./postmaster.pid --warning=no-file-changed -C '$ROOT/pgdata' . | zstd -1 -T2 -q > '$ROOT/ref.tar.zst' && sync"
    cold; timed pgbackrest.backup -- runuser -u postgres -- pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=full backup
    cold; timed wayback.backup -- runuser -u postgres -- "$WB" --config "$ROOT/wayback.yaml" backup --json

    rm -rf "$ROOT/r-pbr" "$ROOT/r-wb" "$ROOT/r-tar"; mkdir -p "$ROOT/r-pbr" "$ROOT/r-tar"; chown postgres: "$ROOT/r-pbr"
    cold; timed ref.untar -- bash -c "zstd -d -T2 -q -c '$ROOT/ref.tar.zst' | tar xf - -C '$ROOT/r-tar' && sync"
    cold; timed pgbackrest.restore -- runuser -u postgres -- bash -c "pgbackrest --config='$ROOT/pgbackrest.conf' --stanza=bench --pg1-path='$ROOT/r-pbr' restore && sync"
    cold; timed wayback.restore -- runuser -u postgres -- bash -c "'$WB' --config '$ROOT/wayback.yaml' restore --target-dir '$ROOT/r-wb' && sync"
    rm -rf "$ROOT/r-pbr" "$ROOT/r-wb" "$ROOT/r-tar"

    rm -rf "$ROOT/pbr-push-repo" "$ROOT/wb-push-repo"; mkdir -p "$ROOT/pbr-push-repo" "$ROOT/wb-push-repo"; chown postgres: "$ROOT/pbr-push-repo" "$ROOT/wb-push-repo"
    as_pg pgbackrest --config="$ROOT/pgbackrest-push.conf" --stanza=push --no-online stanza-create >/dev/null
    as_pg "$WB" --config "$ROOT/wayback-push.yaml" init >/dev/null
    cold; timed pgbackrest.push -- runuser -u postgres -- bash -c "for s in '$ROOT'/stage/*; do pgbackrest --config='$ROOT/pgbackrest-push.conf' --stanza=push archive-push \$s || exit 1; done"
    cold; timed wayback.push -- runuser -u postgres -- bash -c "for s in '$ROOT'/stage/*; do '$WB' --config '$ROOT/wayback-push.yaml' wal-push \$s || exit 1; done"
done

# PITR: WAL after the last backups, a time target in the middle of it, then restore + replay +
# promote end to end with each tool.
PITR_TX=${PITR_TX:-40000}
as_pg "$PGBIN/pgbench" -n -c 2 -t $((PITR_TX / 4)) -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
TARGET=$(as_pg "${PSQL[@]}" -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
as_pg "$PGBIN/pgbench" -n -c 2 -t $((PITR_TX / 4)) -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
LAST=$(as_pg "${PSQL[@]}" -c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$(as_pg "${PSQL[@]}" -c "SELECT last_archived_wal >= '$LAST' FROM pg_stat_archiver")" = t ]; do sleep 0.5; done
WALSEGS=$(as_pg "$WB" --config "$ROOT/wayback.yaml" restore --target-dir "$ROOT/r-wb" --to-time "$TARGET" --dry-run --json | python3 -c "import json,sys; print(json.load(sys.stdin)['wal']['segments'])")
echo "== PITR to $TARGET: $WALSEGS WAL segments to replay"
P2=$((PORT + 1))
for r in $(seq 1 "$REPS"); do
    echo "-- PITR round $r"
    rm -rf "$ROOT/r-pbr" "$ROOT/r-wb"; mkdir -p "$ROOT/r-pbr"; chown postgres: "$ROOT/r-pbr"
    cold; timed pgbackrest.pitr -- runuser -u postgres -- bash -c "pgbackrest --config='$ROOT/pgbackrest.conf' --stanza=bench --pg1-path='$ROOT/r-pbr' --type=time --target='$TARGET' --target-action=promote restore \
        && '$PGBIN/pg_ctl' -D '$ROOT/r-pbr' -l '$ROOT/log/pitr-pbr.log' -w -o \"-p $P2 -c archive_mode=off -c unix_socket_directories='$ROOT/r-pbr'\" start >/dev/null \
        && until [ \"\$('$PGBIN/psql' -X -A -t -h '$ROOT/r-pbr' -p $P2 -U postgres -c 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)\" = f ]; do sleep 0.05; done"
    as_pg "$PGBIN/pg_ctl" -D "$ROOT/r-pbr" -m immediate stop >/dev/null
    cold; timed wayback.pitr -- runuser -u postgres -- "$WB" --config "$ROOT/wayback.yaml" restore --target-dir "$ROOT/r-wb" --to-time "$TARGET" --target-action promote --start --port "$P2"
    as_pg "$PGBIN/pg_ctl" -D "$ROOT/r-wb" -m immediate stop >/dev/null
    # The disk's speed in this minute: the files phase of a restore cannot beat it.
    cold; timed ref.disk_write -- python3 "$HERE/bench/disk-write.py" "$DATA_BYTES" "$ROOT/disk-write.bin"
    rm -rf "$ROOT/r-pbr" "$ROOT/r-wb" "$ROOT/disk-write.bin"
done

as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m fast stop >/dev/null
publish_tsv "compare-$SCALE"
python3 - "$RES" "$DATA_BYTES" "$NSEG" "$ROOT/log/commands.log" <<'PY'
import re, sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    k, s, rss = line.split()
    rows.setdefault(k, []).append((float(s), int(rss)))
data, nseg = int(sys.argv[2]), int(sys.argv[3])
med = {k: st.median(s for s, _ in v) for k, v in rows.items()}
rss = {k: max(r for _, r in v) / 1024 for k, v in rows.items()}
print(f"\n| step | n | median s | min-max s | peak RSS MiB |\n|---|---|---|---|---|")
for k, v in rows.items():
    ss = [s for s, _ in v]
    print(f"| {k} | {len(v)} | {med[k]:.2f} | {min(ss):.2f}-{max(ss):.2f} | {rss[k]:.0f} |")
def ratio(a, b, goal):
    if a in med and b in med:
        print(f"- {a} / {b}: {med[a] / med[b]:.2f}x (goal: {goal})")
print(f"\nData: {data / 1e6:.0f} MB without pg_wal; {nseg} WAL segments per push loop.")
ratio("wayback.backup", "ref.tar_zstd", "<= 1.2x")
ratio("pgbackrest.backup", "ref.tar_zstd", "pgBackRest, for comparison")
ratio("wayback.restore", "pgbackrest.restore", "<= 0.8x")
ratio("wayback.restore", "ref.untar", "the physical reference")
ratio("pgbackrest.restore", "ref.untar", "pgBackRest, for comparison")
ratio("wayback.push", "pgbackrest.push", "<= 0.6x")
ratio("wayback.pitr", "pgbackrest.pitr", "<= 0.7x")
ratio("ref.disk_write", "pgbackrest.pitr", "writing the data's size + fsync, the floor of any restore")
# Wayback's PITR phases, as `restore --start` prints them.
phases = [re.search(r"plan ([\d.]+)s, files ([\d.]+)s, .*target reached after ([\d.]+)s", l) for l in open(sys.argv[4]) if l.startswith("timings:")]
phases = [tuple(float(x) for x in m.groups()) for m in phases if m]
if phases:
    cols = list(zip(*phases))
    print("- wayback PITR phases (median, min-max): " + ", ".join(f"{n} {st.median(c):.2f} s ({min(c):.2f}-{max(c):.2f})" for n, c in zip(("plan", "files", "start to promoted"), cols)))
if "wayback.push" in med:
    print(f"- wayback wal-push per segment: {1000 * med['wayback.push'] / nseg:.1f} ms; pgBackRest: {1000 * med['pgbackrest.push'] / nseg:.1f} ms")
PY
[ "${KEEP:-0}" = 1 ] || rm -rf "$ROOT"
