-- Cluster-level bootstrap for Gatehouse. Run once per PostgreSQL cluster by a
-- superuser (roles are cluster-wide, migrations cannot create them):
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 \
--        -v owner_password="$OWNER_PW" -v app_password="$APP_PW" \
--        -v database=gatehouse -f deploy/postgres/bootstrap.sql
--
-- Idempotent: re-running only resets the passwords.
--
-- gatehouse_owner   LOGIN. Owns the schema, runs `gatehouse migrate`. Subject to
--                   RLS like everyone else (FORCE ROW LEVEL SECURITY), so even a
--                   leaked owner session reads no tenant rows by accident.
-- gatehouse_app     LOGIN. The runtime role: not superuser, no BYPASSRLS, owns
--                   nothing, connects through PgBouncer.
-- gatehouse_definer NOLOGIN, BYPASSRLS. Owns the few SECURITY DEFINER functions
--                   that must work across tenants (resolving a guild id to its
--                   community, provisioning a community). Nobody can log in as it
--                   and gatehouse_app is not a member, so the only cross-tenant
--                   paths are those functions.

SELECT format('CREATE ROLE %I', r)
FROM unnest(ARRAY['gatehouse_owner', 'gatehouse_app', 'gatehouse_definer']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
\gexec

ALTER ROLE gatehouse_owner LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
ALTER ROLE gatehouse_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
ALTER ROLE gatehouse_definer NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;

-- The owner hands ownership of the SECURITY DEFINER functions to the definer
-- role during migrations, which needs membership. Role attributes such as
-- BYPASSRLS are never inherited through membership, and the definer's grants
-- are a subset of what the owner already has, so this widens nothing.
SELECT 'GRANT gatehouse_definer TO gatehouse_owner'
WHERE NOT pg_has_role('gatehouse_owner', 'gatehouse_definer', 'MEMBER')
\gexec

SELECT format('CREATE DATABASE %I OWNER gatehouse_owner', :'database')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database')
\gexec
