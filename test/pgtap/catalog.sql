--
-- The views and configuration tables of cosmosrep: their columns, and the
-- registration of the configuration tables for pg_dump.
--
\unset ECHO
\set QUIET 1
\set ON_ERROR_STOP true
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION cosmosrep;
SELECT plan(34);

SELECT has_schema('cosmosrep');

-- views for state
SELECT has_view('cosmosrep', 'regions', 'view cosmosrep.regions exists');
SELECT columns_are('cosmosrep', 'regions',
    ARRAY['region_id', 'region_name', 'is_local', 'dsn', 'failover_priority', 'accepts_writes',
          'created_at']);
SELECT col_type_is('cosmosrep', 'regions', 'region_id', 'smallint',
                   'cosmosrep.regions.region_id is smallint');
SELECT col_type_is('cosmosrep', 'regions', 'region_name', 'text',
                   'cosmosrep.regions.region_name is text');
SELECT col_type_is('cosmosrep', 'regions', 'is_local', 'boolean',
                   'cosmosrep.regions.is_local is boolean');
SELECT col_type_is('cosmosrep', 'regions', 'dsn', 'text',
                   'cosmosrep.regions.dsn is text');
SELECT col_type_is('cosmosrep', 'regions', 'failover_priority', 'integer',
                   'cosmosrep.regions.failover_priority is integer');
SELECT col_type_is('cosmosrep', 'regions', 'created_at', 'timestamp with time zone',
                   'cosmosrep.regions.created_at is timestamp with time zone');
SELECT col_type_is('cosmosrep', 'regions', 'accepts_writes', 'boolean',
                   'cosmosrep.regions.accepts_writes is boolean');

-- the conflicts feed, and what an operator verifies
SELECT has_view('cosmosrep', 'conflict_feed', 'view cosmosrep.conflict_feed exists');
SELECT columns_are('cosmosrep', 'conflict_feed',
    ARRAY['conflict_id', 'detected_at', 'table_name', 'key', 'kind', 'local_region',
          'remote_region', 'local_version', 'remote_version', 'local_row', 'remote_row',
          'policy', 'resolution', 'winner_row', 'error', 'resolved_at', 'resolved_by']);
SELECT has_view('cosmosrep', 'verify', 'view cosmosrep.verify exists');
SELECT columns_are('cosmosrep', 'verify', ARRAY['sort', 'item', 'name', 'value']);

SELECT has_view('cosmosrep', 'tables', 'view cosmosrep.tables exists');
SELECT columns_are('cosmosrep', 'tables',
    ARRAY['table_name', 'policy', 'path', 'resolver', 'enabled_at']);
SELECT col_type_is('cosmosrep', 'tables', 'table_name', 'regclass',
                   'cosmosrep.tables.table_name is regclass');
SELECT col_type_is('cosmosrep', 'tables', 'policy', 'text',
                   'cosmosrep.tables.policy is text');
SELECT col_type_is('cosmosrep', 'tables', 'path', 'name',
                   'cosmosrep.tables.path is name');
SELECT col_type_is('cosmosrep', 'tables', 'resolver', 'regprocedure',
                   'cosmosrep.tables.resolver is regprocedure');
SELECT col_type_is('cosmosrep', 'tables', 'enabled_at', 'timestamp with time zone',
                   'cosmosrep.tables.enabled_at is timestamp with time zone');

-- configuration tables
SELECT has_table('cosmosrep', 'region', 'configuration table cosmosrep.region exists');
SELECT col_is_pk('cosmosrep', 'region', 'region_id', 'cosmosrep.region has primary key region_id');
SELECT has_table('cosmosrep', 'replicated_table',
                 'configuration table cosmosrep.replicated_table exists');
SELECT col_is_pk('cosmosrep', 'replicated_table', 'relid', 'cosmosrep.replicated_table has primary key relid');
SELECT col_type_is('cosmosrep', 'replicated_table', 'relid', 'regclass',
                   'cosmosrep.replicated_table.relid is regclass');
-- the resolver by its qualified name, not as regprocedure: pg_upgrade
-- refuses reg* columns (function OIDs change)
SELECT col_type_is('cosmosrep', 'replicated_table', 'resolver', 'text',
                   'cosmosrep.replicated_table.resolver is text');
SELECT col_type_is('cosmosrep', 'policy_history', 'resolver', 'text',
                   'cosmosrep.policy_history.resolver is text');

-- both are dumped with the database
SELECT ok('cosmosrep.region'::regclass = ANY (extconfig),
          'cosmosrep.region is registered with pg_extension_config_dump')
  FROM pg_extension WHERE extname = 'cosmosrep';
SELECT ok('cosmosrep.replicated_table'::regclass = ANY (extconfig),
          'cosmosrep.replicated_table is registered with pg_extension_config_dump')
  FROM pg_extension WHERE extname = 'cosmosrep';

-- the tables keep their invariants themselves
SELECT throws_ok(
    $$INSERT INTO cosmosrep.replicated_table (relid, policy) VALUES ('pg_class', 'newest_wins')$$,
    '23514', NULL,
    'replicated_table refuses an unknown policy');
SELECT throws_ok(
    $$INSERT INTO cosmosrep.replicated_table (relid, policy) VALUES ('pg_class', 'custom')$$,
    '23514', NULL,
    'replicated_table refuses policy custom without a resolver');
SELECT throws_ok(
    $$INSERT INTO cosmosrep.region (region_id, region_name, dsn, is_local) VALUES
        (1, 'a', '', true), (2, 'b', '', true)$$,
    '23505', NULL,
    'region allows one local region only');

-- both carry the statement trigger that invalidates cached configuration
SELECT is(
    (SELECT array_agg(tgrelid::regclass::text ORDER BY tgrelid::regclass::text)
       FROM pg_trigger
      WHERE tgfoid = 'cosmosrep.config_changed()'::regprocedure),
    ARRAY['cosmosrep.region', 'cosmosrep.replicated_table', 'cosmosrep.upgrade'],
    'region, replicated_table and upgrade invalidate cached configuration when they change');

SELECT * FROM finish();
ROLLBACK;
