--
-- What enable_table adds to a table, and what disable_table takes away:
-- the columns other tools and regions rely on, and the row trigger.
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

SELECT lives_ok($$SELECT cosmosrep.create_region('pgtap', 'host=localhost dbname=postgres')$$,
                'create_region');
CREATE TABLE et_orders (id int PRIMARY KEY, qty int);
SELECT lives_ok($$SELECT cosmosrep.enable_table('et_orders')$$,
                'enable_table on a table with a primary key');

SELECT columns_are('public', 'et_orders',
                   ARRAY['id', 'qty', '_cr_version', '_cr_base', '_cr_region', '_cr_config', '_cr_seen'],
                   'enable_table adds _cr_version, _cr_base, _cr_region, _cr_config and _cr_seen');
SELECT col_type_is('public', 'et_orders', '_cr_version', 'bigint', '_cr_version is bigint');
SELECT col_type_is('public', 'et_orders', '_cr_base', 'bigint', '_cr_base is bigint');
SELECT col_type_is('public', 'et_orders', '_cr_region', 'smallint', '_cr_region is smallint');
SELECT col_not_null('public', 'et_orders', '_cr_version', '_cr_version is not null');
SELECT col_not_null('public', 'et_orders', '_cr_base', '_cr_base is not null');
SELECT col_not_null('public', 'et_orders', '_cr_region', '_cr_region is not null');
SELECT col_type_is('public', 'et_orders', '_cr_config', 'bigint', '_cr_config is bigint');
SELECT col_not_null('public', 'et_orders', '_cr_config', '_cr_config is not null');
SELECT col_type_is('public', 'et_orders', '_cr_seen', 'bytea', '_cr_seen is bytea');
SELECT is((SELECT attgenerated FROM pg_attribute
            WHERE attrelid = 'et_orders'::regclass AND attname = '_cr_region'),
          ''::"char", '_cr_region is a plain column, stamped by the trigger');

SELECT has_trigger('public', 'et_orders', 'cosmosrep_stamp',
                   'enable_table installs the trigger cosmosrep_stamp');
SELECT trigger_is('public', 'et_orders', 'cosmosrep_stamp', 'cosmosrep', 'stamp_row',
                  'cosmosrep_stamp calls cosmosrep.stamp_row()');
SELECT is((SELECT pg_get_triggerdef(oid) ~ 'BEFORE INSERT OR DELETE OR UPDATE .* FOR EACH ROW'
             FROM pg_trigger
            WHERE tgrelid = 'et_orders'::regclass AND tgname = 'cosmosrep_stamp'),
          true, 'cosmosrep_stamp fires before each inserted, updated and deleted row');
SELECT is((SELECT tgenabled FROM pg_trigger
            WHERE tgrelid = 'et_orders'::regclass AND tgname = 'cosmosrep_stamp'),
          'O'::"char",
          'cosmosrep_stamp fires for local writes only (not with session_replication_role = replica)');

SELECT results_eq(
    $$SELECT table_name, policy, path, resolver FROM cosmosrep.tables$$,
    $$VALUES ('et_orders'::regclass, 'last_writer_wins'::text, NULL::name, NULL::regprocedure)$$,
    'cosmosrep.tables lists the table with the default policy');

SELECT ok((SELECT config_version FROM cosmosrep.replicated_table
             WHERE relid = 'et_orders'::regclass) > 0,
          'the configuration has a version');
SELECT results_eq(
    $$SELECT relid, policy, config_version FROM cosmosrep.policy_history$$,
    $$SELECT relid, policy, config_version FROM cosmosrep.replicated_table$$,
    'the configuration is in the table''s history');

INSERT INTO et_orders VALUES (1, 1);
SELECT is((SELECT _cr_config FROM et_orders),
          (SELECT config_version FROM cosmosrep.replicated_table
            WHERE relid = 'et_orders'::regclass),
          'a local write carries the version of the table''s configuration');
SELECT is((SELECT _cr_region FROM et_orders), 1::smallint,
          'an inserted row carries the local region');

CREATE TEMP TABLE et_before AS
    SELECT config_version FROM cosmosrep.replicated_table WHERE relid = 'et_orders'::regclass;
SELECT lives_ok($$SELECT cosmosrep.alter_table_policy('et_orders', 'manual')$$,
                'alter_table_policy');
SELECT ok((SELECT config_version FROM cosmosrep.replicated_table)
          > (SELECT config_version FROM et_before),
          'a policy change has a newer version');
SELECT is((SELECT count(*) FROM cosmosrep.policy_history), 2::bigint,
          'the history keeps both configurations');
UPDATE et_orders SET qty = 2;
SELECT is((SELECT _cr_config FROM et_orders),
          (SELECT config_version FROM cosmosrep.replicated_table),
          'a write after the change carries the new configuration');
INSERT INTO et_orders VALUES (2, 1);
SELECT is((SELECT _cr_config FROM et_orders WHERE id = 2),
          (SELECT config_version FROM cosmosrep.replicated_table),
          'so does an insert');

SELECT lives_ok($$SELECT cosmosrep.disable_table('et_orders')$$, 'disable_table');
SELECT columns_are('public', 'et_orders', ARRAY['id', 'qty'],
                   'disable_table drops the cosmosrep columns');
SELECT hasnt_trigger('public', 'et_orders', 'cosmosrep_stamp',
                     'disable_table drops the trigger');
SELECT is_empty($$SELECT * FROM cosmosrep.tables$$,
                'cosmosrep.tables no longer lists the table');
SELECT is_empty($$SELECT * FROM cosmosrep.policy_history$$,
                'disable_table forgets the table''s configuration history');

SELECT * FROM finish();
ROLLBACK;
