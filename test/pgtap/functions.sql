--
-- The SQL functions of cosmosrep: signatures, argument names and
-- defaults, return types, volatility, strictness and language.
--
\unset ECHO
\set QUIET 1
\set ON_ERROR_STOP true
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION cosmosrep;
SELECT plan(90);

-- versions
SELECT has_function('cosmosrep', 'next_version', ARRAY[]::name[]);
SELECT function_returns('cosmosrep', 'next_version', ARRAY[]::name[], 'bigint');
SELECT volatility_is('cosmosrep', 'next_version', ARRAY[]::name[], 'volatile');

SELECT has_function('cosmosrep', 'current_version', ARRAY[]::name[]);
SELECT function_returns('cosmosrep', 'current_version', ARRAY[]::name[], 'bigint');
SELECT volatility_is('cosmosrep', 'current_version', ARRAY[]::name[], 'volatile');

SELECT has_function('cosmosrep', 'observe_version', ARRAY['bigint']);
SELECT function_returns('cosmosrep', 'observe_version', ARRAY['bigint'], 'void');
SELECT volatility_is('cosmosrep', 'observe_version', ARRAY['bigint'], 'volatile');
SELECT is_strict('cosmosrep', 'observe_version', ARRAY['bigint']);

SELECT has_function('cosmosrep', 'version_region', ARRAY['bigint']);
SELECT function_returns('cosmosrep', 'version_region', ARRAY['bigint'], 'smallint');
SELECT volatility_is('cosmosrep', 'version_region', ARRAY['bigint'], 'immutable');
SELECT is_strict('cosmosrep', 'version_region', ARRAY['bigint']);

SELECT has_function('cosmosrep', 'version_time', ARRAY['bigint']);
SELECT function_returns('cosmosrep', 'version_time', ARRAY['bigint'], 'timestamp with time zone');
SELECT volatility_is('cosmosrep', 'version_time', ARRAY['bigint'], 'immutable');
SELECT is_strict('cosmosrep', 'version_time', ARRAY['bigint']);

SELECT is(
    (SELECT array_agg(p.proname::text ORDER BY p.proname)
       FROM pg_proc p
      WHERE p.pronamespace = 'cosmosrep'::regnamespace
        AND p.proname IN ('version_region', 'version_time')
        AND p.proparallel = 's'),
    ARRAY['version_region', 'version_time'],
    'version_region and version_time are parallel safe');

-- regions
SELECT has_function('cosmosrep', 'create_region', ARRAY['text', 'text']);
SELECT function_returns('cosmosrep', 'create_region', ARRAY['text', 'text'], 'smallint');
SELECT volatility_is('cosmosrep', 'create_region', ARRAY['text', 'text'], 'volatile');
SELECT is_strict('cosmosrep', 'create_region', ARRAY['text', 'text']);
SELECT is(pg_get_function_arguments('cosmosrep.create_region(text, text)'::regprocedure),
          'region_name text, dsn text',
          'create_region takes (region_name text, dsn text)');

SELECT has_function('cosmosrep', 'redact_dsn', ARRAY['text']);
SELECT function_returns('cosmosrep', 'redact_dsn', ARRAY['text'], 'text');
SELECT volatility_is('cosmosrep', 'redact_dsn', ARRAY['text'], 'immutable');
SELECT is_strict('cosmosrep', 'redact_dsn', ARRAY['text']);

-- multi-region tables
SELECT has_function('cosmosrep', 'enable_table', ARRAY['regclass', 'text', 'name', 'text']);
SELECT function_returns('cosmosrep', 'enable_table', ARRAY['regclass', 'text', 'name', 'text'], 'void');
SELECT volatility_is('cosmosrep', 'enable_table', ARRAY['regclass', 'text', 'name', 'text'], 'volatile');
SELECT isnt_strict('cosmosrep', 'enable_table', ARRAY['regclass', 'text', 'name', 'text'],
                   'enable_table is not strict, so that it can report a null argument');
SELECT is(pg_get_function_arguments('cosmosrep.enable_table(regclass, text, name, text)'::regprocedure),
          'relation regclass, policy text DEFAULT ''last_writer_wins''::text, path name DEFAULT NULL::name, resolver text DEFAULT NULL::text',
          'enable_table takes (relation, policy default last_writer_wins, path default null, resolver default null)');

SELECT has_function('cosmosrep', 'alter_table_policy', ARRAY['regclass', 'text', 'name', 'text']);
SELECT function_returns('cosmosrep', 'alter_table_policy', ARRAY['regclass', 'text', 'name', 'text'], 'void');
SELECT volatility_is('cosmosrep', 'alter_table_policy', ARRAY['regclass', 'text', 'name', 'text'], 'volatile');
SELECT isnt_strict('cosmosrep', 'alter_table_policy', ARRAY['regclass', 'text', 'name', 'text'],
                   'alter_table_policy is not strict, so that it can report a null argument');
SELECT is(pg_get_function_arguments('cosmosrep.alter_table_policy(regclass, text, name, text)'::regprocedure),
          'relation regclass, policy text, path name DEFAULT NULL::name, resolver text DEFAULT NULL::text',
          'alter_table_policy takes (relation, policy, path default null, resolver default null)');

SELECT has_function('cosmosrep', 'disable_table', ARRAY['regclass']);
SELECT function_returns('cosmosrep', 'disable_table', ARRAY['regclass'], 'void');
SELECT volatility_is('cosmosrep', 'disable_table', ARRAY['regclass'], 'volatile');
SELECT is_strict('cosmosrep', 'disable_table', ARRAY['regclass']);
SELECT is(pg_get_function_arguments('cosmosrep.disable_table(regclass)'::regprocedure),
          'relation regclass',
          'disable_table takes (relation regclass)');

-- the conflicts feed
SELECT has_function('cosmosrep', 'resolve_conflict', ARRAY['bigint', 'bigint']);
SELECT function_returns('cosmosrep', 'resolve_conflict', ARRAY['bigint', 'bigint'], 'void');
SELECT is_strict('cosmosrep', 'resolve_conflict', ARRAY['bigint', 'bigint']);
SELECT has_function('cosmosrep', 'resolve_conflict_with_row', ARRAY['bigint', 'jsonb']);
SELECT function_returns('cosmosrep', 'resolve_conflict_with_row', ARRAY['bigint', 'jsonb'], 'void');
SELECT is_strict('cosmosrep', 'resolve_conflict_with_row', ARRAY['bigint', 'jsonb']);
SELECT has_function('cosmosrep', 'reapply_conflict', ARRAY['bigint']);
SELECT function_returns('cosmosrep', 'reapply_conflict', ARRAY['bigint'], 'text');
SELECT is_strict('cosmosrep', 'reapply_conflict', ARRAY['bigint']);
SELECT has_function('cosmosrep', 'discard_conflict', ARRAY['bigint']);
SELECT function_returns('cosmosrep', 'discard_conflict', ARRAY['bigint'], 'void');
SELECT is_strict('cosmosrep', 'discard_conflict', ARRAY['bigint']);

-- write regions and strong reads
SELECT has_function('cosmosrep', 'set_multiple_write_regions', ARRAY['boolean', 'text']);
SELECT function_returns('cosmosrep', 'set_multiple_write_regions', ARRAY['boolean', 'text'], 'void');
SELECT isnt_strict('cosmosrep', 'set_multiple_write_regions', ARRAY['boolean', 'text'],
                   'set_multiple_write_regions is not strict: write_region defaults to null');
SELECT has_function('cosmosrep', 'last_write_position', ARRAY[]::name[]);
SELECT function_returns('cosmosrep', 'last_write_position', ARRAY[]::name[], 'pg_lsn');
SELECT volatility_is('cosmosrep', 'last_write_position', ARRAY[]::name[], 'volatile');

-- triggers
SELECT has_function('cosmosrep', 'stamp_row', ARRAY[]::name[]);
SELECT function_returns('cosmosrep', 'stamp_row', ARRAY[]::name[], 'trigger');
SELECT has_function('cosmosrep', 'config_changed', ARRAY[]::name[]);
SELECT function_returns('cosmosrep', 'config_changed', ARRAY[]::name[], 'trigger');

-- every one of them is C, and none runs with its owner's privileges
SELECT function_lang_is('cosmosrep', f, args, 'c')
  FROM (VALUES ('next_version', ARRAY[]::name[]),
               ('current_version', ARRAY[]::name[]),
               ('observe_version', ARRAY['bigint']::name[]),
               ('version_region', ARRAY['bigint']::name[]),
               ('version_time', ARRAY['bigint']::name[]),
               ('create_region', ARRAY['text', 'text']::name[]),
               ('redact_dsn', ARRAY['text']::name[]),
               ('enable_table', ARRAY['regclass', 'text', 'name', 'text']::name[]),
               ('alter_table_policy', ARRAY['regclass', 'text', 'name', 'text']::name[]),
               ('disable_table', ARRAY['regclass']::name[]),
               ('stamp_row', ARRAY[]::name[]),
               ('config_changed', ARRAY[]::name[])) AS fns(f, args);
SELECT isnt_definer('cosmosrep', f, args)
  FROM (VALUES ('next_version', ARRAY[]::name[]),
               ('current_version', ARRAY[]::name[]),
               ('observe_version', ARRAY['bigint']::name[]),
               ('version_region', ARRAY['bigint']::name[]),
               ('version_time', ARRAY['bigint']::name[]),
               ('create_region', ARRAY['text', 'text']::name[]),
               ('redact_dsn', ARRAY['text']::name[]),
               ('enable_table', ARRAY['regclass', 'text', 'name', 'text']::name[]),
               ('alter_table_policy', ARRAY['regclass', 'text', 'name', 'text']::name[]),
               ('disable_table', ARRAY['regclass']::name[]),
               ('stamp_row', ARRAY[]::name[]),
               ('config_changed', ARRAY[]::name[])) AS fns(f, args);

-- every function, view and table of the extension carries a comment
SELECT is(
    (SELECT array_agg(pg_describe_object(d.classid, d.objid, 0)
                      ORDER BY pg_describe_object(d.classid, d.objid, 0))
       FROM pg_depend d
      WHERE d.refclassid = 'pg_extension'::regclass
        AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'cosmosrep')
        AND d.deptype = 'e'
        AND d.classid IN ('pg_proc'::regclass, 'pg_class'::regclass)
        AND obj_description(d.objid, d.classid::regclass::name) IS NULL),
    NULL,
    'every function, table and view of cosmosrep has a comment');

SELECT * FROM finish();
ROLLBACK;
