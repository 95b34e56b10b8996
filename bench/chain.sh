#!/usr/bin/env bash
# bench/chain.sh [SCALE]: incrementals from the WAL and the restore of a day's chain (issue 19),
# Wayback against pgBackRest 2.45 on the same pgbench cluster, cold cache, medians.
#
#   incr          : after TX (20,000) pgbench transactions since the last backup:
#                   pgbackrest backup --type=incr / wayback backup --type incr (backup.incr_method:
#                   wal), time and peak memory; Wayback's bytes read (backup --json) against what
#                   its full read
#   day's chain   : a new full with each tool, then 23 rounds of CHAIN_TX (5,000) transactions and
#                   an incr with each tool; then a Wayback full of the same data
#   restore       : into an empty directory, + sync: pgbackrest restore (its full + 23 incrs) /
#                   wayback restore of the 23rd incr (full + 23 incrs) / wayback restore of the
#                   full of the same data; the order rotates from round to round
#
# Needs root (drop_caches, runuser), pgbackrest (Debian package; installed if missing) and a
# release build of wayback (built if missing). env: REPS (3), TX (20000), CHAIN (23), CHAIN_TX
# (5000), BENCH_ROOT (/var/tmp/wayback-chain-bench), PORT (5436), KEEP=1 keeps everything,
# RESTORE_ONLY=1 runs only the restores (REPS rounds), on a run kept with KEEP=1 and with the
# release binary as it is now (to compare a change of the restore on the same repository),
# SETTLE=1: an untimed CHECKPOINT before each timed incr of either tool. Without it pgBackRest's
# incr, which runs first, pays the start checkpoint that writes the transactions' dirty buffers
# (about 0.5 s at scale 100) and Wayback's, right after, finds almost nothing to write.
set -euo pipefail
SCALE=${1:-100}
REPS=${REPS:-3}
TX=${TX:-20000}
CHAIN=${CHAIN:-23}
CHAIN_TX=${CHAIN_TX:-5000}
ROOT=${BENCH_ROOT:-/var/tmp/wayback-chain-bench}
PORT=${PORT:-5436}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/chain.sh: run as root (drop_caches, runuser)" >&2; exit 1; }
command -v pgbackrest >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }
WB_BUILT=$(wayback_release "$HERE")

# The backups: a cluster, both tools' fulls and incrs, the day's chain; the ids the restores need
# are kept in $ROOT/log/chain.ids for RESTORE_ONLY=1.
make_chain() {
echo "== setup: pgbench scale $SCALE in $ROOT"
if [ -f "$ROOT/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop || true; fi
rm -rf "$ROOT"; mkdir -p "$ROOT"/{run,log,pbr-repo,wb-repo,lock,bin}
install -s -m 755 "$WB_BUILT" "$ROOT/bin/wayback"; WB=$ROOT/bin/wayback
chown -R postgres: "$ROOT"
RES=$ROOT/log/results.txt; READS=$ROOT/log/reads.txt; : > "$RES"; : > "$READS"
pgbackrest_conf "$ROOT/pgbackrest.conf" "$ROOT/pbr-repo"
wbconf "$ROOT/wayback.yaml" "$ROOT/wb-repo"
chown postgres: "$ROOT"/*.conf "$ROOT"/*.yaml
# Both tools archive each segment side by side (neither waits for the other's push after its
# pg_backup_stop); the command fails when either fails.
start_bench_cluster "pgbackrest --config=$ROOT/pgbackrest.conf --stanza=bench archive-push %p & P=\$!; $WB --config $ROOT/wayback.yaml wal-push %p && wait \$P"
trap 'as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop >/dev/null 2>&1 || true' EXIT
PSQL=("$PGBIN/psql" -X -q -A -t -h "$ROOT/run" -p "$PORT" -U postgres)
as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench stanza-create
as_pg "$WB" --config "$ROOT/wayback.yaml" init >/dev/null
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
as_pg "${PSQL[@]}" -c "CHECKPOINT" >/dev/null
DATA_BYTES=$(du -sb --exclude=pg_wal "$ROOT/pgdata" | cut -f1)
pgbench() { as_pg "$PGBIN/pgbench" -n -c 2 -t $(($1 / 2)) -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1; }
settle() { if [ "${SETTLE:-0}" = 1 ]; then as_pg "${PSQL[@]}" -c "CHECKPOINT" >/dev/null; fi; }
# wayback_backup LABEL TYPE: a timed backup whose --json goes to reads.txt as "LABEL bytesRead blocksRead fallbacks bytesStored"
wayback_backup() {
    settle; cold; timed "$1" -- runuser -u postgres -- bash -c "'$WB' --config '$ROOT/wayback.yaml' backup --type $2 --json > '$ROOT/log/last.json'"
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); r=j.get("reading",{}); print(sys.argv[2], r.get("bytesRead",0), r.get("blocksRead",0), len(r.get("fallbacks") or []), j.get("repositoryBytes",0))' \
        "$ROOT/log/last.json" "$1" >> "$READS"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$ROOT/log/last.json"
}

echo "== full backups (the base of the first incr)"
cold; timed pgbackrest.full -- runuser -u postgres -- pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=full backup
wayback_backup wayback.full full >/dev/null

echo "== incremental rounds: $REPS x $TX pgbench transactions, then an incr with each tool"
for r in $(seq 1 "$REPS"); do
    echo "-- incr round $r"
    pgbench "$TX"
    settle; cold; timed pgbackrest.incr -- runuser -u postgres -- pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=incr backup
    wayback_backup wayback.incr incr >/dev/null
done

echo "== a day's chain: a full with each tool, then $CHAIN x $CHAIN_TX transactions and an incr with each"
as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=full backup
wayback_backup wayback.chain_full full >/dev/null
for r in $(seq 1 "$CHAIN"); do
    pgbench "$CHAIN_TX"
    settle; cold; timed pgbackrest.chain_incr -- runuser -u postgres -- pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench --type=incr backup
    LAST_INCR=$(wayback_backup wayback.chain_incr incr)
done
PBR_SET=$(ls "$ROOT/pbr-repo/backup/bench" | grep -E 'I$' | sort | tail -1)
# What each tool stored for each incr of the chain (pgBackRest: the backup's repository delta).
as_pg pgbackrest --config="$ROOT/pgbackrest.conf" --stanza=bench info --output=json > "$ROOT/log/pbr-info.json"
python3 - "$ROOT/log/pbr-info.json" "$CHAIN" "$READS" "${BENCH_DATA:-$HERE/docs/bench}/chain-$SCALE-sizes.tsv" <<'PY'
import json, os, sys
info, chain, reads, out = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3], sys.argv[4]
pbr = [b["info"]["repository"]["delta"] for b in info[0]["backup"] if b["type"] == "incr"][-chain:]
wb = [l.split() for l in open(reads) if l.startswith("wayback.chain_incr ")]
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    f.write("tool\tincr\tbytes_read\tbytes_stored\n")
    for i, (_, read, _, _, stored) in enumerate(wb, 1): f.write(f"wayback\t{i}\t{read}\t{stored}\n")
    for i, stored in enumerate(pbr, 1): f.write(f"pgbackrest\t{i}\t\t{stored}\n")
print("data:", out)
PY
SAME_FULL=$(wayback_backup wayback.same_full full)
echo "chain: wayback $LAST_INCR, full of the same data $SAME_FULL, pgbackrest $PBR_SET"
printf 'LAST_INCR=%s\nSAME_FULL=%s\nPBR_SET=%s\nDATA_BYTES=%s\n' "$LAST_INCR" "$SAME_FULL" "$PBR_SET" "$DATA_BYTES" > "$ROOT/log/chain.ids"
}

if [ "${RESTORE_ONLY:-0}" = 1 ]; then
    # The restores alone, again, on a run kept with KEEP=1, with the binary built now.
    [ -f "$ROOT/log/chain.ids" ] || { echo "bench/chain.sh: RESTORE_ONLY=1 needs a run kept with KEEP=1 in $ROOT" >&2; exit 1; }
    . "$ROOT/log/chain.ids"
    install -s -m 755 "$WB_BUILT" "$ROOT/bin/wayback"; WB=$ROOT/bin/wayback
    RES=$ROOT/log/restore-results.txt; READS=$ROOT/log/restore-reads.txt; : > "$RES"; : > "$READS"
    echo "== restore only: chain: wayback $LAST_INCR, full of the same data $SAME_FULL, pgbackrest $PBR_SET"
else
    make_chain
fi

echo "== restore: $REPS rounds of each"
restore_pbr() { cold; timed pgbackrest.restore_chain -- runuser -u postgres -- bash -c "pgbackrest --config='$ROOT/pgbackrest.conf' --stanza=bench --set=$PBR_SET --pg1-path='$ROOT/r-pbr' restore && sync"; }
restore_chain() { cold; timed wayback.restore_chain -- runuser -u postgres -- bash -c "'$WB' --config '$ROOT/wayback.yaml' restore --backup $LAST_INCR --to-backup-end --target-dir '$ROOT/r-wb' && sync"; }
restore_full() { cold; timed wayback.restore_full -- runuser -u postgres -- bash -c "'$WB' --config '$ROOT/wayback.yaml' restore --backup $SAME_FULL --to-backup-end --target-dir '$ROOT/r-wbf' && sync"; }
ORDERS=("restore_pbr restore_chain restore_full" "restore_chain restore_full restore_pbr" "restore_full restore_pbr restore_chain")
for r in $(seq 1 "$REPS"); do
    echo "-- restore round $r"
    rm -rf "$ROOT/r-pbr" "$ROOT/r-wb" "$ROOT/r-wbf"; mkdir -p "$ROOT/r-pbr"; chown postgres: "$ROOT/r-pbr"
    # Each round in another order: a restore that follows two others may find the disk busier.
    for step in ${ORDERS[$(( (r - 1) % 3 ))]}; do "$step"; done
done
# The chain's restore is the full's, file for file.
if ! diff -rq --exclude=backup_label --exclude=backup_manifest --exclude=pg_wal --exclude=postgresql.auto.conf \
        --exclude=recovery.signal --exclude=pg_control "$ROOT/r-wb" "$ROOT/r-wbf" >/dev/null; then
    echo "note: the chain's restore and the full's differ in some files (pages changed between the two backups' starts are replayed)"
fi
rm -rf "$ROOT/r-pbr" "$ROOT/r-wb" "$ROOT/r-wbf"

# A restore-only run is not published: its data would replace the backups' measurements.
[ "${RESTORE_ONLY:-0}" = 1 ] || publish_tsv "chain-$SCALE"
python3 - "$RES" "$READS" "$DATA_BYTES" <<'PY'
import sys, statistics as st
rows, reads = {}, {}
for line in open(sys.argv[1]):
    k, s, rss = line.split()
    rows.setdefault(k, []).append((float(s), int(rss)))
for line in open(sys.argv[2]):
    k, b, blocks, fallbacks, _ = line.split()
    reads.setdefault(k, []).append((int(b), int(blocks), int(fallbacks)))
med = {k: st.median(s for s, _ in v) for k, v in rows.items()}
print(f"\n| step | n | median s | min-max s | peak RSS MiB |\n|---|---|---|---|---|")
for k, v in rows.items():
    ss = [s for s, _ in v]
    print(f"| {k} | {len(v)} | {med[k]:.2f} | {min(ss):.2f}-{max(ss):.2f} | {max(r for _, r in v) / 1024:.0f} |")
print(f"\n| Wayback backup | n | median MB read | median blocks read | fallbacks |\n|---|---|---|---|---|")
for k, v in reads.items():
    print(f"| {k} | {len(v)} | {st.median(b for b, _, _ in v) / 1e6:.1f} | {st.median(x for _, x, _ in v):.0f} | {sum(f for _, _, f in v)} |")
print(f"\nData: {int(sys.argv[3]) / 1e6:.0f} MB without pg_wal.")
def ratio(a, b, goal):
    if a in med and b in med: print(f"- {a} / {b}: {med[a] / med[b]:.2f}x (goal: {goal})")
ratio("wayback.incr", "pgbackrest.incr", "<= 0.2x")
if "wayback.incr" in reads and "wayback.full" in reads:
    print(f"- bytes read by wayback.incr / wayback.full: {100 * st.median(b for b, _, _ in reads['wayback.incr']) / reads['wayback.full'][0][0]:.1f} % (goal: <= 15 %)")
ratio("wayback.chain_incr", "pgbackrest.chain_incr", "after 5,000 transactions")
ratio("wayback.restore_chain", "pgbackrest.restore_chain", "<= 0.8x")
ratio("wayback.restore_chain", "wayback.restore_full", "<= 1.15x")
peak = max(max(r for _, r in rows[k]) for k in rows if k.startswith("wayback."))
print(f"- peak RSS of any wayback step: {peak / 1024:.0f} MiB (goal: < 150 MiB)")
PY
[ "${KEEP:-0}" = 1 ] || [ "${RESTORE_ONLY:-0}" = 1 ] || rm -rf "$ROOT"
