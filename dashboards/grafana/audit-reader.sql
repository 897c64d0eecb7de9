-- The read-only role Grafana's `audit-postgres` datasource logs in as. Run once per database
-- (again to change the password; it changes nothing else):
--
--   docker compose exec -T postgres psql -U llm -d llm -v ON_ERROR_STOP=1 \
--     -v reader_password="$GRAFANA_AUDIT_DB_PASSWORD" < dashboards/grafana/audit-reader.sql
--
-- What it may read is the least the dashboard needs: the columns of audit_log below. Not
-- prompt_text (stored with PROXY_AUDIT_STORE_PROMPTS=true), prompt_sha256 or client (an IP
-- address), and no other table (conversations and messages are users' private chats). Its
-- sessions are read-only and time-limited, so a heavy dashboard cannot hold the proxy's locks.
-- Table and column grants survive the proxy's migrations unless a migration recreates
-- audit_log; run this again after one that does.
--
-- Variables: reader_password (required), reader (the role name, default grafana_reader).

\if :{?reader}
\else
  \set reader grafana_reader
\endif

SELECT format('CREATE ROLE %I LOGIN', :'reader')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader') \gexec

ALTER ROLE :"reader" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
  PASSWORD :'reader_password';
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = '30s';

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'reader') \gexec
GRANT USAGE ON SCHEMA public TO :"reader";
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"reader";
GRANT SELECT (id, at, "user", role, endpoint, model, prompt_tokens, completion_tokens, ttft_ms,
              duration_ms, upstream_ms, status, cached)
  ON audit_log TO :"reader";
