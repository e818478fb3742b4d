#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for weft-controller's tests and prints shell exports.
#
#   eval "$(crates/weft-controller/ci/postgres.sh)"     # start; sets WEFT_TEST_POSTGRES_URL/_DIR
#   crates/weft-controller/ci/postgres.sh stop "$WEFT_TEST_POSTGRES_DIR"   # stop and remove
#
# Needs Debian's postgresql package (/usr/lib/postgresql/*/bin); installs nothing. The cluster
# runs as a non-root user (postgres, or weftpg created here) in a temp dir, listens only on a
# unix socket in that dir, and trusts local connections. Only stdout carries the exports.
set -euo pipefail

stop() {
    local dir=$1
    [ -d "$dir/data" ] || { echo "postgres.sh: $dir is not a weft test cluster" >&2; exit 1; }
    local bin; bin=$(cat "$dir/bindir")
    as_user "$(cat "$dir/owner")" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
}

as_user() {
    local user=$1; shift
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null; then runuser -u "$user" -- "$@"; else su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"; fi
    else
        "$@"
    fi
}

if [ "${1:-start}" = stop ]; then
    stop "${2:?usage: postgres.sh stop DIR}"
    exit 0
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgres.sh: no PostgreSQL server found under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    if ! id "$owner" >/dev/null 2>&1; then
        owner=weftpg
        id "$owner" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"
    fi
else
    owner=$(id -un)
fi

dir=$(mktemp -d /tmp/weft-pg.XXXXXX)
chmod 755 "$dir"
echo "$bin" > "$dir/bindir"
echo "$owner" > "$dir/owner"
mkdir "$dir/data"
chown "$owner" "$dir" "$dir/data" 2>/dev/null || true

as_user "$owner" "$bin/initdb" -D "$dir/data" -U weft -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2; exit 1; }
as_user "$owner" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c port=5432 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2 || { cat "$dir/postgres.log" >&2; exit 1; }
as_user "$owner" "$bin/createdb" -h "$dir" -p 5432 -U weft weft >&2

enc=$(printf '%s' "$dir" | sed 's|/|%2F|g')
echo "export WEFT_TEST_POSTGRES_URL='postgres://weft@${enc}:5432/weft'"
echo "export WEFT_TEST_POSTGRES_DIR='$dir'"
