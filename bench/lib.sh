# Shared by the bench/ scripts (sourced): helpers for timing commands fairly on a cold cache.
# Expects ROOT (the bench directory) and, for `timed`, RES (the results file).
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { runuser -u postgres -- "$@"; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# timed LABEL -- cmd...: appends "LABEL seconds maxrss_kb" to $RES
timed() {
    local label=$1; shift; [ "$1" = -- ] && shift
    local tf; tf=$(mktemp)
    /usr/bin/time -f "%e %M" -o "$tf" "$@" >>"$ROOT/log/commands.log" 2>&1 || { echo "FAILED: $label (see $ROOT/log/commands.log)" >&2; cat "$tf" >&2; exit 1; }
    echo "$label $(tail -1 "$tf")" >> "$RES"
    rm -f "$tf"
}
# publish_tsv NAME: the timed runs of $RES as data, one line per run, into
# ${BENCH_DATA:-docs/bench}/NAME.tsv (bench/plot draws docs/bench/*.png from these files).
# Columns: step, tool, operation, run, seconds, max_rss_kib.
publish_tsv() {
    local out=${BENCH_DATA:-$HERE/docs/bench}
    mkdir -p "$out"
    awk 'BEGIN { OFS = "\t"; print "step", "tool", "operation", "run", "seconds", "max_rss_kib" }
         { i = index($1, "."); n[$1]++; print $1, substr($1, 1, i - 1), substr($1, i + 1), n[$1], $2, $3 }' "$RES" > "$out/$1.tsv"
    echo "data: $out/$1.tsv"
}
# The release binary, built if missing.
wayback_release() {
    local here=$1
    [ -x "$here/.build/release/wayback" ] || (cd "$here" && swift build -c release --static-swift-stdlib --product wayback >/dev/null)
    echo "$here/.build/release/wayback"
}
# pgbackrest_conf FILE REPO: pgBackRest as the anchors measured it (zst:1, process-max=2, sync
# archive-push), stanza `bench` on the cluster at $ROOT/pgdata, port $PORT.
pgbackrest_conf() {
cat > "$1" <<CONF
[global]
repo1-path=$2
repo1-retention-full=99
process-max=2
compress-type=zst
compress-level=1
archive-async=n
start-fast=y
lock-path=$ROOT/lock
log-path=$ROOT/log
log-level-console=warn
[bench]
pg1-path=$ROOT/pgdata
pg1-port=$PORT
pg1-socket-path=$ROOT/run
CONF
}
# start_bench_cluster ARCHIVE_COMMAND: initdb (checksums on) at $ROOT/pgdata, the benchmark's
# settings, start.
start_bench_cluster() {
as_pg "$PGBIN/initdb" -k -D "$ROOT/pgdata" -U postgres -A trust --no-instructions >/dev/null
cat >> "$ROOT/pgdata/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$ROOT/run'
port = $PORT
shared_buffers = 1GB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_level = replica
archive_mode = on
archive_command = '$1'
CONF
as_pg "$PGBIN/pg_ctl" -D "$ROOT/pgdata" -l "$ROOT/log/postgres.log" -w start >/dev/null
}
# wbconf FILE REPO [LINES]: a Wayback configuration for the bench cluster, one local repository
# (LINES are added to its entry, e.g. an encryption block).
wbconf() { # FILE REPO [encryption block]
cat > "$1" <<CONF
cluster:
  name: bench
  pgdata: $ROOT/pgdata
  connection: postgresql://postgres@/postgres?host=$ROOT/run&port=$PORT
repositories:
  - name: local
    type: local
    path: $2
${3:-}
compression: { algorithm: zstd, level: 1 }
parallelism: 2
lock_path: $ROOT/lock
log_level: warning
CONF
}
