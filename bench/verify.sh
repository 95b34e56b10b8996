#!/usr/bin/env bash
# bench/verify.sh [SCALE]: `wayback verify` against the physical limit, on a pgbench cluster
# (scale 100 by default), cold cache, REPS rounds:
#
#   ref.unzstd     zstd -d -T2 of the data directory as one tar.zst (`tar | zstd -1 -T2`): reading
#                  and decompressing the same data, with nothing checked
#   wayback.verify wayback verify --all of a repository holding one full backup (every object's
#                  SHA-256, every frame decoded, every file's SHA-256, the WAL)
#
# Then the incremental case: INCR_TX (5000) pgbench transactions, an incr, and a default `verify`
# (new objects plus verify.resample_percent of the rest): the share of the repository's bytes it
# read. What is new (the incr, the WAL since) is read whole, so the share follows the change.
# Needs root (drop_caches, runuser) and a release build (built if missing). env: REPS (3), INCR_TX,
# BENCH_ROOT (/var/tmp/wayback-bench-verify), PORT (5436).
set -euo pipefail
SCALE=${1:-100}
REPS=${REPS:-3}
ROOT=${BENCH_ROOT:-/var/tmp/wayback-bench-verify}
PORT=${PORT:-5436}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/verify.sh: run as root (drop_caches, runuser)" >&2; exit 1; }
WB_BUILT=$(wayback_release "$HERE")
WB=$ROOT/bin/wayback

if [ -f "$ROOT/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m immediate stop || true; fi
rm -rf "$ROOT"; mkdir -p "$ROOT"/{run,log,repo,lock,bin}
install -s -m 755 "$WB_BUILT" "$WB"
chown -R postgres: "$ROOT"
trap 'as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -m fast -w stop >/dev/null 2>&1 || true' EXIT
RES=$ROOT/log/results.txt; : > "$RES"
wbconf "$ROOT/wayback.yaml" "$ROOT/repo"
echo "catalog: { enabled: false }" >> "$ROOT/wayback.yaml"
chown postgres: "$ROOT/wayback.yaml"
start_bench_cluster "$WB --config $ROOT/wayback.yaml wal-push %p"
PSQL=("$PGBIN/psql" -X -q -A -t -h "$ROOT/run" -p "$PORT" -U postgres)
as_pg "$WB" --config "$ROOT/wayback.yaml" init >/dev/null
echo "== setup: pgbench scale $SCALE"
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
as_pg "${PSQL[@]}" -c "CHECKPOINT" >/dev/null
as_pg "$WB" --config "$ROOT/wayback.yaml" backup >/dev/null
tar cf - --exclude='./pg_wal/0*' --exclude='./pg_wal/archive_status/*' --exclude=./postmaster.pid --warning=no-file-changed \
    -C "$ROOT/pgdata" . | zstd -1 -T2 -q > "$ROOT/ref.tar.zst"
PLAIN=$(zstd -d -c -q "$ROOT/ref.tar.zst" | wc -c)
for r in $(seq 1 "$REPS"); do
    echo "-- round $r"
    cold; timed ref.unzstd -- bash -c "zstd -d -T2 -q -c '$ROOT/ref.tar.zst' > /dev/null"
    cold; timed wayback.verify -- runuser -u postgres -- "$WB" --config "$ROOT/wayback.yaml" verify --all --json
done
REPO_BYTES=$(du -sb "$ROOT/repo" | cut -f1)
as_pg "$WB" --config "$ROOT/wayback.yaml" verify --all --json > "$ROOT/log/verify-all.json"

echo "== incremental: ${INCR_TX:-5000} pgbench transactions, an incr, a default verify"
as_pg "$PGBIN/pgbench" -t "${INCR_TX:-5000}" -c 2 -h "$ROOT/run" -p "$PORT" -U postgres postgres >/dev/null 2>&1
as_pg "$WB" --config "$ROOT/wayback.yaml" backup --type incr >/dev/null
as_pg "${PSQL[@]}" -c "SELECT pg_switch_wal()" >/dev/null; sleep 2
as_pg "$WB" --config "$ROOT/wayback.yaml" verify --json > "$ROOT/log/verify-incremental.json"
REPO_AFTER=$(du -sb "$ROOT/repo" | cut -f1)

echo "== a drill against restore --start of the same backup (to the latest point)"
mkdir -p "$ROOT/scratch"; chown postgres: "$ROOT/scratch"
cold; as_pg "$WB" --config "$ROOT/wayback.yaml" restore --target-dir "$ROOT/scratch/restored" --start --port $((PORT + 1)) --json > "$ROOT/log/restore.json"
as_pg "$PGBIN/pg_ctl" -D "$ROOT/scratch/restored" -m fast -w stop >/dev/null; rm -rf "$ROOT/scratch/restored"
echo "drill: { scratch_dir: $ROOT/scratch }" >> "$ROOT/wayback.yaml"
cold; as_pg "$WB" --config "$ROOT/wayback.yaml" drill --json > "$ROOT/log/drill.json"

python3 - "$RES" "$PLAIN" "$ROOT/log/verify-all.json" "$ROOT/log/verify-incremental.json" "$REPO_AFTER" "$ROOT/log" <<'PY'
import json, statistics, sys
res, plain, all_json, incr_json, repo_after, logs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
t = {}
for line in open(res):
    label, secs, rss = line.split()
    t.setdefault(label, []).append(float(secs))
med = {k: statistics.median(v) for k, v in t.items()}
full = json.load(open(all_json))["repositories"][0]
incr = json.load(open(incr_json))["repositories"][0]
print(f"\nplain data {plain / 1e6:.0f} MB; verify --all read {full['bytesRead'] / 1e6:.0f} MB of objects ({full['objectsRead']} objects)")
print(f"| step | median s | MB/s of plain data |\n|---|---|---|")
for k in ("ref.unzstd", "wayback.verify"):
    print(f"| {k} | {med[k]:.2f} | {plain / 1e6 / med[k]:.0f} |")
print(f"- wayback verify --all speed / zstd -d: {med['ref.unzstd'] / med['wayback.verify']:.2f}x (goal: at least 0.8x)")
print(f"- incremental verify after one incr: read {incr['bytesRead'] / 1e6:.0f} MB of a {repo_after / 1e6:.0f} MB repository "
      f"({100 * incr['bytesRead'] / repo_after:.1f} %; goal under 20 %), {incr['objectsRead']} objects, {incr['objectsNotDue']} not due")
restore = json.load(open(logs + "/restore.json"))
restore_s = restore["planSeconds"] + restore["filesSeconds"] + restore["start"]["recoverySeconds"]
drill = json.load(open(logs + "/drill.json"))
print(f"- drill recovery time {drill['recoverySeconds']:.2f} s (checks {drill['checksSeconds']:.2f} s more) vs restore --start {restore_s:.2f} s: "
      f"{drill['recoverySeconds'] / restore_s:.2f}x (goal: at most 1.2x)")
PY
