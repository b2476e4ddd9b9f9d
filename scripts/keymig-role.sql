-- The least privilege keymig needs for one target, and nothing more.
--
--   psql -d DB -v role=keymig -v table=public.users \
--        -v secret_column=mfa_secret -v flag_column=mfa_fernet_active \
--        -f scripts/keymig-role.sql
--
-- Run it as the table's owner or a superuser. It creates the role if it is missing
-- (LOGIN, no password: set one with \password, or use a client certificate), and grants:
--   - USAGE on the table's schema, SELECT on the table (every command reads it);
--   - UPDATE on the secret column and the flag column only (migrate, rollback, reset-mfa);
--   - ownership of schema keymig and everything in it (runs, chunks, journal, requests),
--     made here if it is absent, so that keymig can create and upgrade its own tables
--     without CREATE on the database.
-- It grants no INSERT, DELETE or TRUNCATE on the target, no other column, no CREATE on the
-- database and no role attribute (SUPERUSER, BYPASSRLS, ...). Leave flag_column out (or
-- empty) for a target without a flag column. Idempotent: run it again after a change.
\set ON_ERROR_STOP on
\if :{?flag_column}
\else
\set flag_column ''
\endif

BEGIN;

SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec

SELECT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, :'role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = :'table'::regclass \gexec

SELECT format('GRANT SELECT ON TABLE %s TO %I', :'table'::regclass, :'role') \gexec

SELECT format('GRANT UPDATE (%I) ON TABLE %s TO %I', :'secret_column', :'table'::regclass, :'role') \gexec

SELECT format('GRANT UPDATE (%I) ON TABLE %s TO %I', :'flag_column', :'table'::regclass, :'role')
 WHERE :'flag_column' <> '' \gexec

SELECT format('CREATE SCHEMA keymig AUTHORIZATION %I', :'role')
 WHERE to_regnamespace('keymig') IS NULL \gexec

-- A schema an earlier, more privileged keymig made: hand it and its objects over.
SELECT format('ALTER SCHEMA keymig OWNER TO %I', :'role') \gexec
SELECT format('ALTER TABLE keymig.%I OWNER TO %I', c.relname, :'role')
  FROM pg_class c
 WHERE c.relnamespace = 'keymig'::regnamespace AND c.relkind IN ('r', 'p') \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'role')
  FROM pg_proc p
 WHERE p.pronamespace = 'keymig'::regnamespace \gexec

COMMIT;
