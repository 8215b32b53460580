#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks: `pg_cluster.sh start DIR [PORT]`
# prints the connection URL (Unix socket in DIR, no TCP listener); `pg_cluster.sh stop DIR`.
# initdb refuses to run as root, so as root the cluster runs as the `postgres` user in a
# directory it owns (see ../shared/LIBRARY-NOTES.md). fsync is off (thrown away anyway);
# PG_FSYNC=on keeps it on, for benchmarks comparable with a durable SQLite store.
set -euo pipefail
cmd=${1:?usage: pg_cluster.sh start|stop DIR [PORT]}
dir=${2:?usage: pg_cluster.sh start|stop DIR [PORT]}
port=${3:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || bin=$(dirname "$(command -v pg_ctl)")
as_owner() {
    if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}
case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "'$bin/initdb' -D '$dir/data' -A trust -U p2psync --no-sync" >/dev/null
    fi
    as_owner "'$bin/pg_ctl' -D '$dir/data' -w -l '$dir/log' \
        -o \"-k '$dir' -p $port -c listen_addresses='' -c fsync=${PG_FSYNC:-off}\" start" >/dev/null
    echo "postgresql://p2psync@/postgres?host=$dir&port=$port"
    ;;
stop)
    as_owner "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null
    ;;
*)
    echo "usage: pg_cluster.sh start|stop DIR [PORT]" >&2; exit 2;;
esac
