#!/bin/bash
# A small version of the official image's entrypoint: first start initialises PGDATA with the
# POSTGRES_* variables, every start runs the server as the postgres user listening on all
# interfaces of the container (only the backend network reaches it).
set -euo pipefail

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    # A fresh named volume may belong to root; the server refuses a data directory it does not own.
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # As the official image: no password means no start, never a trust-authenticated server.
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    initdb --pgdata="$PGDATA" --username="$user" --encoding=UTF8 --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >/dev/null
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # Listening on no TCP address while the database and init scripts run: nobody can connect
    # to a half-initialised server.
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait --silent start
    psql=(psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --username="$user")
    if [ "$db" != postgres ]; then
        "${psql[@]}" --dbname=postgres --set=db="$db" <<<'CREATE DATABASE :"db";'
    fi
    # As the official image: *.sql and *.sh in /docker-entrypoint-initdb.d, in name order.
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sql)
                echo "docker-entrypoint: running $script"
                "${psql[@]}" --dbname="$db" -f "$script"
                ;;
            *.sh)
                echo "docker-entrypoint: running $script"
                bash "$script"
                ;;
        esac
    done
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait --silent stop
    echo "docker-entrypoint: initialised $PGDATA (user $user, database $db)"
fi

shift
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
