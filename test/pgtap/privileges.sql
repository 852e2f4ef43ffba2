--
-- Privileges: administration functions and configuration tables are
-- closed to PUBLIC; the views and the per-table functions are open (the
-- table functions check ownership themselves).
--
\unset ECHO
\set QUIET 1
\set ON_ERROR_STOP true
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION cosmosrep;
SELECT plan(32);

-- administration: not executable by PUBLIC
SELECT function_privs_are('cosmosrep', 'create_region', ARRAY['text', 'text'],
                          'public', ARRAY[]::name[],
                          'PUBLIC cannot create a region');
SELECT function_privs_are('cosmosrep', 'observe_version', ARRAY['bigint'],
                          'public', ARRAY[]::name[],
                          'PUBLIC cannot move the clock of the region');

-- pg_upgrade of a region: superusers only, its state included
SELECT function_privs_are('cosmosrep', f, args, 'public', ARRAY[]::name[],
                          'PUBLIC cannot execute cosmosrep.' || f)
  FROM (VALUES ('prepare_upgrade', ARRAY['interval']::name[]),
               ('upgrade_stop_writes', ARRAY[]::name[]),
               ('upgrade_drain', ARRAY['interval']::name[]),
               ('finish_upgrade', ARRAY[]::name[])) AS fns(f, args);
SELECT table_privs_are('cosmosrep', t, 'public', ARRAY[]::name[],
                       'PUBLIC has no privilege on cosmosrep.' || t)
  FROM unnest(ARRAY['upgrade', 'upgrade_origin']::name[]) AS t;

-- what other regions call as the link role, and what grants it: not
-- executable by PUBLIC (cosmosrep.grant_link_role grants the first three)
SELECT function_privs_are('cosmosrep', f, args, 'public', ARRAY[]::name[],
                          'PUBLIC cannot execute cosmosrep.' || f)
  FROM (VALUES ('add_region', ARRAY['smallint', 'text', 'text']::name[]),
               ('forget_region', ARRAY['text']::name[]),
               ('output_plugin_allowed', ARRAY[]::name[]),
               ('grant_link_role', ARRAY['regrole']::name[])) AS fns(f, args);

-- functions every user may call
SELECT function_privs_are('cosmosrep', f, args, 'public', ARRAY['EXECUTE'],
                          'PUBLIC may execute cosmosrep.' || f)
  FROM (VALUES ('next_version', ARRAY[]::name[]),
               ('current_version', ARRAY[]::name[]),
               ('version_region', ARRAY['bigint']::name[]),
               ('version_time', ARRAY['bigint']::name[]),
               ('redact_dsn', ARRAY['text']::name[]),
               ('enable_table', ARRAY['regclass', 'text', 'name', 'text']::name[]),
               ('alter_table_policy', ARRAY['regclass', 'text', 'name', 'text']::name[]),
               ('disable_table', ARRAY['regclass']::name[]),
               ('stamp_row', ARRAY[]::name[])) AS fns(f, args);

-- the configuration tables: nothing for PUBLIC, connection strings included
SELECT table_privs_are('cosmosrep', 'region', 'public', ARRAY[]::name[],
                       'PUBLIC has no privilege on cosmosrep.region');
SELECT table_privs_are('cosmosrep', 'replicated_table', 'public', ARRAY[]::name[],
                       'PUBLIC has no privilege on cosmosrep.replicated_table');
SELECT ok(NOT has_column_privilege('public', 'cosmosrep.region', 'dsn', 'SELECT'),
          'PUBLIC cannot read the column cosmosrep.region.dsn');

-- the views: readable, not writable
SELECT table_privs_are('cosmosrep', 'regions', 'public', ARRAY['SELECT'],
                       'PUBLIC may only read cosmosrep.regions');
SELECT table_privs_are('cosmosrep', 'tables', 'public', ARRAY['SELECT'],
                       'PUBLIC may only read cosmosrep.tables');

-- an ordinary role gets exactly what PUBLIC gets
CREATE ROLE regress_cr_pgtap_user;
SELECT ok(NOT has_function_privilege('regress_cr_pgtap_user',
                                     'cosmosrep.create_region(text, text)', 'EXECUTE'),
          'an ordinary role cannot create a region');
SELECT ok(NOT has_table_privilege('regress_cr_pgtap_user', 'cosmosrep.region', 'SELECT'),
          'an ordinary role cannot read cosmosrep.region');
SELECT ok(has_table_privilege('regress_cr_pgtap_user', 'cosmosrep.regions', 'SELECT'),
          'an ordinary role may read cosmosrep.regions');

-- ordinary roles reach the views through the schema
SELECT schema_privs_are('cosmosrep', 'public', ARRAY['USAGE'],
                        'PUBLIC may use the schema cosmosrep');
SELECT ok(has_schema_privilege('regress_cr_pgtap_user', 'cosmosrep', 'USAGE'),
          'an ordinary role may use the schema cosmosrep');

-- views do not expose the connection string to ordinary users
SELECT ok(pg_get_viewdef('cosmosrep.regions'::regclass) ~ 'redact_dsn',
          'cosmosrep.regions redacts the connection string');

SELECT * FROM finish();
ROLLBACK;
