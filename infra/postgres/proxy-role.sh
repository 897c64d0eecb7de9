#!/usr/bin/env bash
# The proxy's own database role: it owns the stack's database (POSTGRES_DB) and its `public`
# schema, so the proxy's migrations run as it, and it holds nothing else: not superuser, no
# CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS. The image's superuser (POSTGRES_USER) is kept for
# administration only.
#
# Runs by itself on the first start of an empty data directory: docker-compose.yml mounts it into
# /docker-entrypoint-initdb.d (the Pulumi program uploads it there). On a database created before
# it existed, run it once by hand; it changes nothing else, and running it again only sets the
# password again (the way to change it):
#
#   docker compose exec postgres /docker-entrypoint-initdb.d/10-proxy-role.sh
#
# That also hands over what the superuser created (the proxy's tables, sequences and types), so
# the role can migrate them. Environment: POSTGRES_USER, POSTGRES_DB (the image's), PROXY_DB_ROLE
# (default llm_proxy) and PROXY_DB_PASSWORD (required; the same value as in the proxy's
# DATABASE_URL). psql connects as the image's entrypoint does: PGHOST/PGPORT when set, else the
# local socket.
set -euo pipefail

if [ -z "${PROXY_DB_PASSWORD:-}" ]; then
    echo "proxy-role.sh: PROXY_DB_PASSWORD is not set: set it in .env (openssl rand -hex 24)," \
        "the same value the proxy's DATABASE_URL uses" >&2
    false
fi

psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
    --set role="${PROXY_DB_ROLE:-llm_proxy}" --set password="$PROXY_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec

ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'password';

SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'role') \gexec
ALTER SCHEMA public OWNER TO :"role";

-- Objects created before the role existed (the superuser used to run the migrations). Sequences
-- that belong to a table column move with their table.
SELECT format('ALTER TABLE public.%I OWNER TO %I', c.relname, :'role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND pg_get_userbyid(c.relowner) <> :'role' \gexec

SELECT format('ALTER SEQUENCE public.%I OWNER TO %I', c.relname, :'role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> :'role'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')) \gexec

SELECT format('ALTER TYPE public.%I OWNER TO %I', t.typname, :'role')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typtype = 'e' AND pg_get_userbyid(t.typowner) <> :'role' \gexec
SQL
echo "proxy-role.sh: role ${PROXY_DB_ROLE:-llm_proxy} owns database ${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
