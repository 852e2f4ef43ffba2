--
-- Errors: what enable_table, alter_table_policy, disable_table, the row
-- trigger and the version functions refuse, and that a refused call
-- changes nothing.
--
CREATE EXTENSION cosmosrep;

-- the columns of a table, in order, as one line
CREATE FUNCTION pg_temp.columns_of(rel regclass) RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', '
                      ORDER BY attnum)
      FROM pg_attribute
     WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped
$$;

-- the user-visible triggers of a table
CREATE FUNCTION pg_temp.triggers_of(rel regclass) RETURNS text
LANGUAGE sql AS $$
    SELECT coalesce(string_agg(tgname, ', ' ORDER BY tgname), '(none)')
      FROM pg_trigger
     WHERE tgrelid = rel AND NOT tgisinternal
$$;

CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'one');

--
-- Before the database is a region
--

-- Bad input: enable_table before create_region
SELECT cosmosrep.enable_table('items');

-- Bad input: a version before create_region
SELECT cosmosrep.next_version();

-- nothing changed
SELECT pg_temp.columns_of('items'), pg_temp.triggers_of('items');
SELECT count(*) AS tables FROM cosmosrep.tables;

-- once the database is a region, the same session can enable tables
SELECT cosmosrep.create_region('eastus2', 'host=10.0.0.1 dbname=shop');

--
-- Relations that cannot be multi-region
--

CREATE TABLE no_pk (id int, name text);
CREATE TABLE unique_only (id int UNIQUE NOT NULL, name text);
CREATE VIEW items_view AS SELECT * FROM items;
CREATE SEQUENCE items_seq;
CREATE MATERIALIZED VIEW items_matview AS SELECT * FROM items;
CREATE TABLE measurements (id int) PARTITION BY RANGE (id);
CREATE TABLE measurements_low PARTITION OF measurements FOR VALUES FROM (0) TO (100);
CREATE TABLE readings (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);
CREATE TABLE readings_low (v int, id int NOT NULL);
ALTER TABLE readings ATTACH PARTITION readings_low FOR VALUES FROM (0) TO (100);
CREATE TEMPORARY TABLE scratch (id int PRIMARY KEY);
CREATE UNLOGGED TABLE cache (id int PRIMARY KEY);
CREATE TABLE has_version (id int PRIMARY KEY, _cr_version bigint);
CREATE TABLE has_base (id int PRIMARY KEY, _cr_base bigint);
CREATE TABLE has_region (id int PRIMARY KEY, _cr_region text);

-- Bad input: a table without a primary key
SELECT cosmosrep.enable_table('no_pk');

-- Bad input: a unique constraint is not a primary key
SELECT cosmosrep.enable_table('unique_only');

-- Bad input: a view
SELECT cosmosrep.enable_table('items_view');

-- Bad input: a sequence
SELECT cosmosrep.enable_table('items_seq');

-- Bad input: a materialized view
SELECT cosmosrep.enable_table('items_matview');

-- Bad input: a partitioned table without a primary key
SELECT cosmosrep.enable_table('measurements');

-- Bad input: a partition: it is multi-region with its partitioned table
SELECT cosmosrep.enable_table('measurements_low');

-- Bad input: a partition with its columns at other positions than its table
SELECT cosmosrep.enable_table('readings');

-- Bad input: a temporary table
SELECT cosmosrep.enable_table('scratch');

-- Bad input: an unlogged table
SELECT cosmosrep.enable_table('cache');

-- Bad input: a table that already has a column _cr_version
SELECT cosmosrep.enable_table('has_version');

-- Bad input: a table that already has a column _cr_base
SELECT cosmosrep.enable_table('has_base');

-- Bad input: a table that already has a column _cr_region
SELECT cosmosrep.enable_table('has_region');

-- Bad input: a table with row-level security
CREATE TABLE secured (id int PRIMARY KEY);
ALTER TABLE secured ENABLE ROW LEVEL SECURITY;
SELECT cosmosrep.enable_table('secured');

-- Bad input: a table whose row-level security applies to its owner too
CREATE TABLE forced (id int PRIMARY KEY);
ALTER TABLE forced FORCE ROW LEVEL SECURITY;
SELECT cosmosrep.enable_table('forced');

-- Bad input: a configuration table of cosmosrep itself
SELECT cosmosrep.enable_table('cosmosrep.region');

-- Bad input: a relation that does not exist
SELECT cosmosrep.enable_table('no_such_table');

-- Bad input: a null relation
SELECT cosmosrep.enable_table(NULL);

-- Bad input: a null relation for alter_table_policy
SELECT cosmosrep.alter_table_policy(NULL, 'manual');

-- disable_table is strict: a null relation does nothing
SELECT cosmosrep.disable_table(NULL);

-- none of them changed
SELECT count(*) AS tables FROM cosmosrep.tables;
SELECT c.relname, pg_temp.columns_of(c.oid), pg_temp.triggers_of(c.oid)
  FROM pg_class c
 WHERE c.relname IN ('no_pk', 'unique_only', 'measurements', 'measurements_low',
                     'readings', 'readings_low', 'scratch', 'cache',
                     'has_version', 'has_base', 'has_region', 'secured', 'forced')
 ORDER BY c.relname;

--
-- Enabled and not enabled
--

SELECT cosmosrep.enable_table('items', policy => 'manual');

-- Bad input: enabling a table twice
SELECT cosmosrep.enable_table('items');

-- Bad input: enabling a table twice, with another policy
SELECT cosmosrep.enable_table('items', policy => 'last_writer_wins', path => 'name');

-- Bad input: disable_table of a table that is not multi-region
SELECT cosmosrep.disable_table('no_pk');

-- Bad input: alter_table_policy of a table that is not multi-region
SELECT cosmosrep.alter_table_policy('no_pk', 'manual');

-- Bad input: disable_table of a view
SELECT cosmosrep.disable_table('items_view');

-- items is enabled once, with its first policy
SELECT table_name, policy, path FROM cosmosrep.tables;
SELECT pg_temp.columns_of('items'), pg_temp.triggers_of('items');

--
-- Ownership
--

CREATE ROLE regress_cr_intruder;
GRANT USAGE ON SCHEMA cosmosrep TO regress_cr_intruder;
GRANT SELECT, INSERT, UPDATE, DELETE ON items, no_pk TO regress_cr_intruder;
SET ROLE regress_cr_intruder;

-- Bad input: enable_table by a user who does not own the table
SELECT cosmosrep.enable_table('no_pk');

-- Bad input: alter_table_policy by a user who does not own the table
SELECT cosmosrep.alter_table_policy('items', 'last_writer_wins');

-- Bad input: disable_table by a user who does not own the table
SELECT cosmosrep.disable_table('items');

-- Bad input: create_region by an ordinary user
SELECT cosmosrep.create_region('westeurope', 'host=10.0.0.2 dbname=shop');

-- Bad input: observe_version by an ordinary user
SELECT cosmosrep.observe_version(1);

RESET ROLE;

-- writing to an enabled table needs the table privileges only, not even
-- access to the cosmosrep schema
REVOKE USAGE ON SCHEMA cosmosrep FROM regress_cr_intruder;
SET ROLE regress_cr_intruder;
UPDATE items SET name = 'uno' WHERE id = 1;
SELECT name, _cr_base > 0 AS based FROM items;
RESET ROLE;

-- the policy is unchanged
SELECT table_name, policy, path FROM cosmosrep.tables;
SELECT count(*) AS regions FROM cosmosrep.regions;

--
-- A resolver runs as the table's owner, who must be allowed to execute it
--

CREATE TABLE tenant_items (id int PRIMARY KEY, v text);
ALTER TABLE tenant_items OWNER TO regress_cr_intruder;
CREATE FUNCTION guarded_resolver(incoming tenant_items, existing tenant_items,
                                 is_tombstone boolean, conflicting tenant_items[])
RETURNS tenant_items LANGUAGE sql AS 'SELECT incoming';
REVOKE EXECUTE ON FUNCTION guarded_resolver FROM PUBLIC;

-- Bad input: enable_table, by a superuser, with a resolver the owner may not execute
SELECT cosmosrep.enable_table('tenant_items', policy => 'custom',
                              resolver => 'guarded_resolver');

SELECT cosmosrep.enable_table('tenant_items');

-- Bad input: alter_table_policy with a resolver the owner may not execute
SELECT cosmosrep.alter_table_policy('tenant_items', 'custom',
                                    resolver => 'guarded_resolver');

-- the policy is unchanged
SELECT table_name, policy FROM cosmosrep.tables WHERE table_name::text = 'tenant_items';

-- with EXECUTE, the owner's resolver is accepted
GRANT EXECUTE ON FUNCTION guarded_resolver TO regress_cr_intruder;
SELECT cosmosrep.alter_table_policy('tenant_items', 'custom',
                                    resolver => 'guarded_resolver');
SELECT table_name, policy FROM cosmosrep.tables WHERE table_name::text = 'tenant_items';
SELECT cosmosrep.disable_table('tenant_items');
DROP FUNCTION guarded_resolver;
DROP TABLE tenant_items;

--
-- The row trigger
--

-- Bad input: stamp_row called directly
SELECT cosmosrep.stamp_row();

-- Bad input: stamp_row as an AFTER trigger
CREATE TABLE misuse (id int PRIMARY KEY, _cr_version bigint, _cr_base bigint);
CREATE TRIGGER stamp_after AFTER INSERT ON misuse
    FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row();
INSERT INTO misuse (id) VALUES (1);
DROP TRIGGER stamp_after ON misuse;

-- Bad input: stamp_row as a statement trigger
CREATE TRIGGER stamp_statement BEFORE INSERT ON misuse
    FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.stamp_row();
INSERT INTO misuse (id) VALUES (1);
DROP TRIGGER stamp_statement ON misuse;

-- Bad input: stamp_row on a table that is not multi-region
CREATE TRIGGER stamp_before BEFORE INSERT ON no_pk
    FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row();
INSERT INTO no_pk VALUES (1, 'one');
DROP TRIGGER stamp_before ON no_pk;

-- Bad input: stamp_row on a table that is not multi-region but has a version column
CREATE TRIGGER stamp_before BEFORE INSERT ON has_version
    FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row();
INSERT INTO has_version VALUES (1, 0);
DROP TRIGGER stamp_before ON has_version;

-- Bad input: stamp_row on a table that has every cosmosrep column but is
-- not multi-region
CREATE TABLE lookalike (id int PRIMARY KEY, _cr_version bigint, _cr_base bigint,
                        _cr_region smallint, _cr_config bigint);
CREATE TRIGGER cosmosrep_stamp BEFORE INSERT OR UPDATE OR DELETE ON lookalike
    FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row();
INSERT INTO lookalike (id) VALUES (1);

-- Bad input: stamp_truncate on a table that is not multi-region (its
-- truncate message would stop replication from this region)
CREATE TRIGGER cosmosrep_truncate BEFORE TRUNCATE ON lookalike
    FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.stamp_truncate();
TRUNCATE lookalike;

-- Bad input: config_changed on a table that is not cosmosrep's
CREATE TRIGGER config_changed AFTER INSERT ON misuse
    FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.config_changed();
INSERT INTO misuse (id) VALUES (1);
DROP TRIGGER config_changed ON misuse;

-- none of the inserts happened, and no tombstone was written
SELECT (SELECT count(*) FROM misuse) AS misuse,
       (SELECT count(*) FROM no_pk) AS no_pk,
       (SELECT count(*) FROM has_version) AS has_version,
       (SELECT count(*) FROM lookalike) AS lookalike,
       (SELECT count(*) FROM cosmosrep.tombstones) AS tombstones;

-- Bad input: config_changed called directly
SELECT cosmosrep.config_changed();

--
-- Versions
--

-- Bad input: observe_version of 0
SELECT cosmosrep.observe_version(0);

-- Bad input: observe_version of a negative number
SELECT cosmosrep.observe_version(-1);

-- observe_version is strict: null does nothing
SELECT cosmosrep.observe_version(NULL);

--
-- The rows of a recorded conflict
--

-- Bad input: a row that a conflict does not have
SELECT cosmosrep.conflict_row('(0,1)', 'other');

-- no entry at that place (past the end, no such item): null
SELECT cosmosrep.conflict_row('(4000000,1)', 'local') IS NULL AS past_the_end,
       cosmosrep.conflict_row('(0,0)', 'remote') IS NULL AS no_item;

--
-- The link role
--

-- Bad input: a superuser as the link role
CREATE ROLE regress_cr_super SUPERUSER;
SELECT cosmosrep.grant_link_role('regress_cr_super');
DROP ROLE regress_cr_super;

-- grant_link_role is for superusers only
SET ROLE regress_cr_intruder;
SELECT cosmosrep.grant_link_role('regress_cr_intruder');
RESET ROLE;

-- the link role may call what peers call, PUBLIC may not
CREATE ROLE regress_cr_link LOGIN REPLICATION;
SELECT cosmosrep.grant_link_role('regress_cr_link');
SELECT p.proname,
       pg_catalog.has_function_privilege('regress_cr_link', p.oid, 'EXECUTE') AS link,
       pg_catalog.has_function_privilege('regress_cr_intruder', p.oid, 'EXECUTE') AS others
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = 'cosmosrep'::regnamespace
   AND p.proname IN ('add_region', 'forget_region', 'output_plugin_allowed',
                     'current_version', 'last_write_position')
 ORDER BY 1;
-- a table made multi-region later is readable by the link role at once
CREATE TABLE linked (id int PRIMARY KEY);
SELECT cosmosrep.enable_table('linked');
SELECT pg_catalog.has_table_privilege('regress_cr_link', 'linked', 'SELECT') AS link_reads_new_table;
DROP TABLE linked;
DROP OWNED BY regress_cr_link;
DROP ROLE regress_cr_link;

--
-- Schema changes of a multi-region table (src/ddl.c)
--
CREATE TABLE ddl_target (id int PRIMARY KEY, v text);
CREATE TABLE ddl_plain (i int);
CREATE INDEX ddl_plain_i ON ddl_plain (i);
SELECT cosmosrep.enable_table('ddl_target');

-- Bad input: replicate_ddl with two statements
SELECT cosmosrep.replicate_ddl('ALTER TABLE ddl_target ADD COLUMN a int; ALTER TABLE ddl_target ADD COLUMN b int');

-- Bad input: replicate_ddl of a statement that changes no multi-region table
SELECT cosmosrep.replicate_ddl('ALTER TABLE ddl_plain ADD COLUMN a int');

-- Bad input: CREATE INDEX CONCURRENTLY of a multi-region table
CREATE INDEX CONCURRENTLY ddl_target_v ON ddl_target (v);

-- Bad input: DROP INDEX of a multi-region table's index and another's
CREATE INDEX ddl_target_v ON ddl_target (v);
DROP INDEX ddl_target_v, ddl_plain_i;

-- Bad input: OWNER TO together with a change of shape
ALTER TABLE ddl_target OWNER TO regress_cr_intruder, ADD COLUMN o int;

-- Bad input: a column whose existing rows would get a value per region
ALTER TABLE ddl_target ADD COLUMN r float8 DEFAULT random();
ALTER TABLE ddl_target ADD COLUMN n int GENERATED ALWAYS AS IDENTITY;
-- a constant default is one value everywhere
ALTER TABLE ddl_target ADD COLUMN k int DEFAULT 5;

-- Bad input: a plain ALTER TABLE when cosmosrep.ddl_replication = refuse
SET cosmosrep.ddl_replication = refuse;
ALTER TABLE ddl_target ADD COLUMN a int;
-- replicate_ddl is the way then
SELECT cosmosrep.replicate_ddl('ALTER TABLE ddl_target ADD COLUMN a int');

-- warn: the change is made here only, with a warning
SET cosmosrep.ddl_replication = warn;
ALTER TABLE ddl_target ADD COLUMN b int;
RESET cosmosrep.ddl_replication;

-- Bad input: a user who is not a superuser cannot change the setting
SET ROLE regress_cr_intruder;
SET cosmosrep.ddl_replication = warn;
RESET ROLE;

-- nothing but the accepted changes happened
SELECT pg_temp.columns_of('ddl_target');
DROP TABLE ddl_target, ddl_plain;

--
-- Partitions of a multi-region table (src/ddl.c)
--
CREATE TABLE part_target (k text, id int, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
CREATE TABLE part_target_a PARTITION OF part_target FOR VALUES IN ('a');
SELECT cosmosrep.enable_table('part_target');
-- a new partition is a replicated change
CREATE TABLE part_target_b PARTITION OF part_target FOR VALUES IN ('b');
INSERT INTO part_target VALUES ('a', 1);

-- Bad input: TRUNCATE of a partition alone
TRUNCATE part_target_a;

-- Bad input: DROP TABLE of a partition
DROP TABLE part_target_a;

-- Bad input: DETACH PARTITION of a partition that holds rows
ALTER TABLE part_target DETACH PARTITION part_target_a;

-- Bad input: DETACH PARTITION CONCURRENTLY
ALTER TABLE part_target DETACH PARTITION part_target_b CONCURRENTLY;

-- Bad input: ATTACH PARTITION of a table that holds rows
CREATE TABLE part_target_c (LIKE part_target);
INSERT INTO part_target_c (k, id, _cr_version, _cr_base, _cr_region, _cr_config)
VALUES ('c', 1, 1, 0, 1, 1);
ALTER TABLE part_target ATTACH PARTITION part_target_c FOR VALUES IN ('c');

-- Bad input: ATTACH PARTITION of a table with its columns at other positions
CREATE TABLE part_target_d (id int NOT NULL, k text NOT NULL,
    _cr_version bigint NOT NULL, _cr_base bigint NOT NULL, _cr_region smallint NOT NULL,
    _cr_config bigint NOT NULL, _cr_seen bytea);
ALTER TABLE part_target ATTACH PARTITION part_target_d FOR VALUES IN ('d');

-- an empty partition detaches, and a detached table drops
DELETE FROM part_target WHERE k = 'a';
ALTER TABLE part_target DETACH PARTITION part_target_a;
DROP TABLE part_target_a;

-- warn: a partition with rows is truncated here only, with a warning
INSERT INTO part_target VALUES ('b', 1);
SET cosmosrep.ddl_replication = warn;
TRUNCATE part_target_b;
RESET cosmosrep.ddl_replication;
SELECT count(*) AS rows_left FROM part_target;
DROP TABLE part_target, part_target_c, part_target_d;

DROP VIEW items_view;
DROP MATERIALIZED VIEW items_matview;
DROP TABLE items, no_pk, unique_only, measurements, readings, scratch, cache,
    has_version, has_base, has_region, misuse, secured, forced, lookalike;
DROP SEQUENCE items_seq;
DROP EXTENSION cosmosrep CASCADE;
DROP ROLE regress_cr_intruder;
