--
-- The SQLSTATE of every error cosmosrep reports: clients and tools match
-- on these codes, so they are part of the API.  (The messages, details
-- and hints are tested by pg_regress.)
--
\unset ECHO
\set QUIET 1
\set ON_ERROR_STOP true
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION cosmosrep;
SELECT plan(30);

CREATE TABLE st_items (id int PRIMARY KEY, name text, doc json);
CREATE TABLE st_no_pk (id int);
CREATE TABLE st_has_version (id int PRIMARY KEY, _cr_version bigint);
CREATE UNLOGGED TABLE st_unlogged (id int PRIMARY KEY);
CREATE VIEW st_view AS SELECT 1 AS id;
CREATE FUNCTION st_not_a_resolver(a st_items, b st_items) RETURNS st_items
    LANGUAGE sql AS 'SELECT a';

-- 55000 object_not_in_prerequisite_state
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items')$$, '55000', NULL,
                 'enable_table before create_region: 55000');
SELECT throws_ok($$SELECT cosmosrep.next_version()$$, '55000', NULL,
                 'next_version before create_region: 55000');

-- regions
SELECT throws_ok($$SELECT cosmosrep.create_region('Bad Name', 'host=x')$$, '42602', NULL,
                 'invalid region name: 42602 invalid_name');
SELECT throws_ok($$SELECT cosmosrep.create_region('eastus', 'host')$$, '42601', NULL,
                 'invalid connection string: 42601 syntax_error');
SELECT throws_ok($$SELECT cosmosrep.redact_dsn('host')$$, '42601', NULL,
                 'redact_dsn of an invalid connection string: 42601 syntax_error');
SELECT lives_ok($$SELECT cosmosrep.create_region('eastus', 'host=x')$$,
                'create_region');
SELECT throws_ok($$SELECT cosmosrep.create_region('westus', 'host=y')$$, '42710', NULL,
                 'create_region twice: 42710 duplicate_object');

-- relations
SELECT throws_ok($$SELECT cosmosrep.enable_table(NULL)$$, '22004', NULL,
                 'null relation: 22004 null_value_not_allowed');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', NULL)$$, '22004', NULL,
                 'null policy: 22004 null_value_not_allowed');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_no_pk')$$, '55000', NULL,
                 'table without primary key: 55000 object_not_in_prerequisite_state');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_view')$$, '42809', NULL,
                 'not a table: 42809 wrong_object_type');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_unlogged')$$, '0A000', NULL,
                 'unlogged table: 0A000 feature_not_supported');
SELECT throws_ok($$SELECT cosmosrep.enable_table('cosmosrep.region')$$, '0A000', NULL,
                 'cosmosrep''s own table: 0A000 feature_not_supported');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_has_version')$$, '42701', NULL,
                 'column _cr_version exists: 42701 duplicate_column');
SELECT throws_ok($$SELECT cosmosrep.disable_table('st_items')$$, '55000', NULL,
                 'disable a table that is not multi-region: 55000');
SELECT throws_ok($$SELECT cosmosrep.alter_table_policy('st_items', 'manual')$$, '55000', NULL,
                 'alter a table that is not multi-region: 55000');

-- policies
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', 'newest_wins')$$, '22023', NULL,
                 'unknown policy: 22023 invalid_parameter_value');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', 'manual', 'name')$$, '22023', NULL,
                 'path with policy manual: 22023 invalid_parameter_value');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', path => 'nope')$$, '42703', NULL,
                 'path naming a missing column: 42703 undefined_column');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', path => 'doc')$$, '42804', NULL,
                 'path of an unordered type: 42804 datatype_mismatch');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', 'custom')$$, '22023', NULL,
                 'custom without resolver: 22023 invalid_parameter_value');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', resolver => 'st_not_a_resolver')$$,
                 '22023', NULL,
                 'resolver with policy last_writer_wins: 22023 invalid_parameter_value');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', 'custom', resolver => 'st_nothing')$$,
                 '42883', NULL,
                 'missing resolver function: 42883 undefined_function');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items', 'custom', resolver => 'st_not_a_resolver')$$,
                 '42P13', NULL,
                 'resolver with the wrong signature: 42P13 invalid_function_definition');

SELECT lives_ok($$SELECT cosmosrep.enable_table('st_items')$$, 'enable_table');
SELECT throws_ok($$SELECT cosmosrep.enable_table('st_items')$$, '42710', NULL,
                 'enable a table twice: 42710 duplicate_object');

-- triggers and versions
SELECT throws_ok($$SELECT cosmosrep.stamp_row()$$, '39P01', NULL,
                 'stamp_row outside a trigger: 39P01 trigger_protocol_violated');
SELECT throws_ok($$SELECT cosmosrep.config_changed()$$, '39P01', NULL,
                 'config_changed outside a trigger: 39P01 trigger_protocol_violated');
CREATE TRIGGER st_stamp BEFORE INSERT ON st_no_pk
    FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row();
SELECT throws_ok($$INSERT INTO st_no_pk VALUES (1)$$, '39P01', NULL,
                 'stamp_row on a table that is not multi-region: 39P01 trigger_protocol_violated');
SELECT throws_ok($$SELECT cosmosrep.observe_version(0)$$, '22023', NULL,
                 'observe_version(0): 22023 invalid_parameter_value');

SELECT * FROM finish();
ROLLBACK;
