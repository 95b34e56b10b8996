#!/usr/bin/env bash
# bench/s3.sh [SCALE]: what an S3 repository costs, against moto on loopback (Python: a slow
# server, so only relative figures and request counts mean something, no ratio against pgBackRest).
#
#   - full backup to local alone, to local + S3, and to S3 alone (REPS rounds, cold cache, medians);
#   - requests per backup and per WAL segment, by kind, from moto's access log;
#   - the multipart part size and parallel parts in use (the repository's settings);
#   - restore from S3 alone.
# Needs root and a release build of wayback (built if missing). env: REPS (3), BENCH_ROOT
# (/var/tmp/wayback-s3-bench), PORT (5434), S3PORT (19999).
set -euo pipefail
SCALE=${1:-50}
REPS=${REPS:-3}
ROOT=${BENCH_ROOT:-/var/tmp/wayback-s3-bench}
PORT=${PORT:-5434}
S3PORT=${S3PORT:-19999}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/s3.sh: run as root" >&2; exit 1; }
WB=$(wayback_release "$HERE")

rm -rf "$ROOT"; mkdir -p "$ROOT"; chown postgres: "$ROOT"
python3 "$HERE/scripts/s3/moto-server.py" "$S3PORT" "$ROOT/s3.json" --bucket wayback-bench 2>"$ROOT/moto.log" &
MOTO=$!
trap 'kill -9 $MOTO 2>/dev/null; as_pg $PGBIN/pg_ctl -D $ROOT/pgdata -m immediate stop >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do [ -f "$ROOT/s3.json" ] && break; sleep 0.1; done
KEY=$(python3 -c "import json;print(json.load(open('$ROOT/s3.json'))['access_key_id'])")
SECRET=$(python3 -c "import json;print(json.load(open('$ROOT/s3.json'))['secret_access_key'])")

s3repo() {  # name prefix
cat <<YAML
  - name: $1
    type: s3
    bucket: wayback-bench
    region: us-east-1
    endpoint: http://127.0.0.1:$S3PORT
    path_style: true
    prefix: $2
    access_key_id: $KEY
    secret_access_key: $SECRET
    wal_push: sync
YAML
}
config() {  # file, repositories...
  { cat <<YAML
cluster:
  name: bench
  pgdata: $ROOT/pgdata
  connection: postgresql://postgres@/postgres?host=$ROOT&port=$PORT
repositories:
YAML
    printf '%s\n' "$2"
    echo "parallelism: 2"
    echo "lock_path: $ROOT/locks"
  } > "$1"
  chown postgres: "$1"; chmod 600 "$1"
}
local_repo() { printf '  - name: local\n    type: local\n    path: %s\n' "$ROOT/repo-$1"; }
LOCAL="$(local_repo archive)"
config "$ROOT/archive.yaml" "$LOCAL
$(s3repo offsite archive/)"

as_pg $PGBIN/initdb -D "$ROOT/pgdata" -A trust --data-checksums >/dev/null
cat >> "$ROOT/pgdata/postgresql.conf" <<CONF
port = $PORT
unix_socket_directories = '$ROOT'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$WB --config $ROOT/current.yaml wal-push %p'
CONF
cp "$ROOT/archive.yaml" "$ROOT/current.yaml"; chown postgres: "$ROOT/current.yaml"
as_pg $PGBIN/pg_ctl -D "$ROOT/pgdata" -l "$ROOT/pg.log" -w start >/dev/null
as_pg $WB --config "$ROOT/archive.yaml" init >/dev/null
as_pg $PGBIN/pgbench -h "$ROOT" -p $PORT -i -q -s "$SCALE" postgres >/dev/null 2>&1
# pgbench data compresses about 20x; add incompressible rows so that packs are large (multipart).
as_pg $PGBIN/psql -h "$ROOT" -p $PORT -qAtc "CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE blob AS SELECT gen_random_bytes(1000) b FROM generate_series(1, ${BLOB_ROWS:-300000})" postgres >/dev/null
DBSIZE=$(as_pg $PGBIN/psql -h "$ROOT" -p $PORT -Atc "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database" postgres)

requests() { grep -c '" [0-9][0-9][0-9] ' "$ROOT/moto.log" || true; }
by_kind() {  # lines since $1
  tail -n +"$(( $1 + 1 ))" "$ROOT/moto.log" | grep -oE '"(GET|PUT|POST|HEAD|DELETE) [^ ?]*\??[a-zA-Z-]*' | \
    sed -E 's/"(GET|PUT|POST|HEAD|DELETE) [^?]*\??([a-zA-Z-]*).*/\1 \2/' | sort | uniq -c | awk '{printf "%s%s %s=%s", sep, $2, ($3==""?"object":$3), $1; sep=", "}'
}
RES=$ROOT/results.txt; : > "$RES"
for r in $(seq "$REPS"); do
  for target in local both s3; do
    case $target in
      local) repos="$(local_repo r$r-local)" ;;
      both)  repos="$(local_repo r$r-both)
$(s3repo offsite r$r-both/)" ;;
      s3)    repos="$(s3repo offsite r$r-s3/)" ;;
    esac
    config "$ROOT/$target.yaml" "$repos"
    cp "$ROOT/$target.yaml" "$ROOT/current.yaml"
    as_pg $WB --config "$ROOT/current.yaml" init >/dev/null
    before=$(wc -l < "$ROOT/moto.log")
    cold
    t0=$(date +%s.%N)
    as_pg $WB --config "$ROOT/current.yaml" backup >/dev/null 2>>"$ROOT/commands.log"
    t1=$(date +%s.%N)
    echo "$target $(echo "$t1 - $t0" | bc) $(( $(wc -l < "$ROOT/moto.log") - before ))" >> "$RES"
    [ "$r" = 1 ] && [ "$target" = s3 ] && echo "requests of one backup to S3 by kind: $(by_kind "$before")" > "$ROOT/kinds.txt"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
L=$(awk '$1=="local"{print $2}' "$RES" | median); B=$(awk '$1=="both"{print $2}' "$RES" | median); S=$(awk '$1=="s3"{print $2}' "$RES" | median)
Q=$(awk '$1=="s3"{print $3}' "$RES" | median)

# WAL: requests per pushed segment (local + sync S3), over 10 segment switches.
cp "$ROOT/archive.yaml" "$ROOT/current.yaml"
as_pg $WB --config "$ROOT/current.yaml" init >/dev/null
before=$(wc -l < "$ROOT/moto.log")
for _ in $(seq 10); do as_pg $PGBIN/psql -h "$ROOT" -p $PORT -Atc "CREATE TABLE IF NOT EXISTS t(x int); INSERT INTO t VALUES (1); SELECT pg_switch_wal()" postgres >/dev/null; done
sleep 5
WALREQ=$(( $(wc -l < "$ROOT/moto.log") - before ))

# Restore from the local repository, then from S3 alone.
restore() {  # config dir
  cold
  local t0 t1; t0=$(date +%s.%N)
  as_pg $WB --config "$1" restore --target-dir "$2" --to-backup-end >/dev/null 2>>"$ROOT/commands.log"
  t1=$(date +%s.%N); echo "$t1 - $t0" | bc
}
RESTORE_LOCAL=$(restore "$ROOT/local.yaml" "$ROOT/restored-local")
RESTORE=$(restore "$ROOT/s3.yaml" "$ROOT/restored-s3")
STORED=$(du -sm "$ROOT/repo-r1-local" | cut -f1)

echo "pgbench scale $SCALE + incompressible rows ($DBSIZE, ${STORED} MiB stored), $REPS rounds, medians, moto on loopback:"
echo "  full backup to local alone:   ${L} s"
echo "  full backup to local + S3:    ${B} s ($(echo "scale=2; $B / $L" | bc)x local alone)"
echo "  full backup to S3 alone:      ${S} s; $Q requests"
cat "$ROOT/kinds.txt" | sed 's/^/  /'
echo "  WAL: $WALREQ S3 requests for 10 segments pushed to local + S3 (sync)"
echo "  restore to backup end: from local ${RESTORE_LOCAL} s, from S3 alone ${RESTORE} s"
echo "  S3 settings: part size 16 MiB (objects up to 20 MiB go in one PUT), 4 parts in parallel per object, 2 workers"
