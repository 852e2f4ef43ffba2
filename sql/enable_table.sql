--
-- Making a table multi-region: cosmosrep.enable_table, the columns and the
-- row trigger it adds, the cosmosrep.tables view, alter_table_policy and
-- disable_table.
--
CREATE EXTENSION cosmosrep;
SELECT cosmosrep.create_region('eastus2', 'host=10.0.0.1 dbname=shop');

-- the columns of a table, in order, as one line
CREATE FUNCTION pg_temp.columns_of(rel regclass) RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod)
                      || CASE WHEN attnotnull THEN ' not null' ELSE '' END,
                      ', ' ORDER BY attnum)
      FROM pg_attribute
     WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped
$$;

-- the user-visible triggers of a table
CREATE FUNCTION pg_temp.triggers_of(rel regclass) RETURNS text
LANGUAGE sql AS $$
    SELECT coalesce(string_agg(tgname || ': ' || pg_get_triggerdef(oid), '; '
                               ORDER BY tgname), '(none)')
      FROM pg_trigger
     WHERE tgrelid = rel AND NOT tgisinternal
$$;

CREATE TABLE orders (id int PRIMARY KEY, item text, qty int);
INSERT INTO orders SELECT g, 'item ' || g, g FROM generate_series(1, 5) g;
CREATE TEMP TABLE orders_before AS SELECT * FROM orders;

--
-- Enabling a table that already holds rows
--

SELECT cosmosrep.enable_table('orders');

-- three columns are added, and the row trigger installed
SELECT pg_temp.columns_of('orders');
SELECT column_name, column_default, is_generated, generation_expression
  FROM information_schema.columns
 WHERE table_name = 'orders' AND column_name LIKE '\_cr\_%'
 ORDER BY ordinal_position;
SELECT pg_temp.triggers_of('orders');

-- the existing rows keep their data ...
SELECT count(*) AS rows_changed
  FROM (SELECT id, item, qty FROM orders
        EXCEPT SELECT id, item, qty FROM orders_before) s;

-- ... and each got its own version, base 0 and the local region
SELECT count(*) AS rows,
       bool_and(_cr_version > 0) AS versions_positive,
       count(DISTINCT _cr_version) = count(*) AS versions_distinct,
       bool_and(_cr_base = 0) AS bases_zero,
       bool_and(_cr_region = (SELECT region_id FROM cosmosrep.regions WHERE is_local))
           AS region_is_local,
       bool_and(cosmosrep.version_region(_cr_version) = _cr_region) AS region_matches_version
  FROM orders;

-- the table and its default policy are listed
SELECT table_name, policy, path, resolver, enabled_at <= now() AS enabled_before_now
  FROM cosmosrep.tables;

--
-- The trigger stamps local writes
--

CREATE TEMP TABLE v0 AS SELECT id, _cr_version AS version FROM orders;

-- INSERT: a new version, above every version issued before, base 0
INSERT INTO orders (id, item, qty) VALUES (6, 'item 6', 6);
SELECT _cr_version > (SELECT max(version) FROM v0) AS newest,
       _cr_base = 0 AS base_zero,
       _cr_region = 1 AS region_local
  FROM orders WHERE id = 6;

-- INSERT that names the cosmosrep columns: the trigger replaces the values
INSERT INTO orders (id, item, qty, _cr_version, _cr_base) VALUES (7, 'item 7', 7, 42, 41);
SELECT _cr_version > (SELECT max(version) FROM v0) AS newest,
       _cr_base = 0 AS base_zero
  FROM orders WHERE id = 7;

-- UPDATE: a new version, greater than the one it replaces, which becomes
-- the base; rows not updated keep their version
UPDATE orders SET qty = qty + 10 WHERE id IN (1, 2);
SELECT o.id,
       CASE WHEN o._cr_version = v0.version AND o._cr_base = 0
            THEN 'unchanged'
            WHEN o._cr_version > v0.version AND o._cr_base = v0.version
            THEN 'new version, based on the previous one'
            ELSE 'WRONG'
       END AS stamp
  FROM orders o JOIN v0 USING (id)
 ORDER BY o.id;

-- each row updated by one statement gets its own version
SELECT count(DISTINCT _cr_version) AS distinct_versions FROM orders WHERE id IN (1, 2);

-- UPDATE that sets the cosmosrep columns: the trigger replaces the values
CREATE TEMP TABLE v1 AS SELECT id, _cr_version AS version FROM orders;
UPDATE orders SET _cr_version = 1, _cr_base = 2 WHERE id = 3;
SELECT o._cr_version > v1.version AS version_increased,
       o._cr_base = v1.version AS base_is_previous_version
  FROM orders o JOIN v1 USING (id) WHERE id = 3;

-- a second UPDATE of the same row is based on the first one
CREATE TEMP TABLE v2 AS SELECT id, _cr_version AS version FROM orders;
UPDATE orders SET qty = 0 WHERE id = 1;
SELECT o._cr_base = v2.version AS base_is_previous_version,
       o._cr_version > v2.version AS version_increased
  FROM orders o JOIN v2 USING (id) WHERE id = 1;

-- the version is an etag: an update conditioned on the version read
-- succeeds once, then no longer matches
CREATE TEMP TABLE etag AS SELECT _cr_version AS version FROM orders WHERE id = 4;
UPDATE orders SET qty = 40 WHERE id = 4 AND _cr_version = (SELECT version FROM etag);
UPDATE orders SET qty = 41 WHERE id = 4 AND _cr_version = (SELECT version FROM etag);
SELECT qty FROM orders WHERE id = 4;

-- DELETE removes the row
DELETE FROM orders WHERE id = 5;
SELECT count(*) AS rows FROM orders;

-- a write rolled back leaves the row as it was
CREATE TEMP TABLE v3 AS SELECT id, _cr_version AS version, _cr_base AS base FROM orders;
BEGIN;
UPDATE orders SET qty = -1 WHERE id = 2;
ROLLBACK;
SELECT o._cr_version = v3.version AS version_unchanged,
       o._cr_base = v3.base AS base_unchanged, o.qty
  FROM orders o JOIN v3 USING (id) WHERE id = 2;

--
-- Changing the policy
--

CREATE FUNCTION resolve_orders(incoming orders, existing orders,
                               is_tombstone boolean, conflicting orders[])
RETURNS orders LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE WHEN incoming.qty >= existing.qty THEN incoming ELSE existing END;
END
$$;

SELECT cosmosrep.alter_table_policy('orders', 'manual');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

SELECT cosmosrep.alter_table_policy('orders', 'custom', resolver => 'resolve_orders');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

SELECT cosmosrep.alter_table_policy('orders', 'last_writer_wins', path => 'qty');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

SELECT cosmosrep.alter_table_policy('orders', 'last_writer_wins');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

-- changing the policy leaves the rows and their versions alone
SELECT count(*) AS rows_changed
  FROM (SELECT id, _cr_version FROM orders
        EXCEPT SELECT id, version FROM v3) s;

-- enable_table and alter_table_policy run in the caller's transaction
BEGIN;
SELECT cosmosrep.alter_table_policy('orders', 'manual');
ROLLBACK;
SELECT table_name, policy FROM cosmosrep.tables;

CREATE TABLE scratch (id int PRIMARY KEY);
BEGIN;
SELECT cosmosrep.enable_table('scratch');
ROLLBACK;
SELECT pg_temp.columns_of('scratch'), pg_temp.triggers_of('scratch');
SELECT count(*) AS tables FROM cosmosrep.tables;

--
-- Names that need quoting
--

CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept"."Order Lines" ("Line No" int PRIMARY KEY, "Amount" numeric);
INSERT INTO "Sales Dept"."Order Lines" VALUES (1, 9.5);
SELECT cosmosrep.enable_table('"Sales Dept"."Order Lines"', path => 'Amount');
UPDATE "Sales Dept"."Order Lines" SET "Amount" = 10 WHERE "Line No" = 1;
SELECT _cr_version > _cr_base AS stamped, _cr_base > 0 AS based
  FROM "Sales Dept"."Order Lines";
SELECT table_name, policy, path FROM cosmosrep.tables ORDER BY table_name::text;

--
-- What cosmosrep.tables shows to other users
--

CREATE ROLE regress_cr_owner;
CREATE ROLE regress_cr_other;
GRANT USAGE ON SCHEMA cosmosrep TO regress_cr_owner, regress_cr_other;

-- a table owner who is not a superuser enables their own table
CREATE TABLE owned (id int PRIMARY KEY, note text);
ALTER TABLE owned OWNER TO regress_cr_owner;
SET ROLE regress_cr_owner;
SELECT cosmosrep.enable_table('owned', policy => 'manual');
INSERT INTO owned VALUES (1, 'mine');
SELECT _cr_version > 0 AS stamped FROM owned;
SELECT table_name, policy FROM cosmosrep.tables ORDER BY table_name::text;
RESET ROLE;

-- a user sees only the tables they may read
SET ROLE regress_cr_other;
SELECT table_name, policy FROM cosmosrep.tables ORDER BY table_name::text;
RESET ROLE;
GRANT SELECT ON owned TO regress_cr_other;
SET ROLE regress_cr_other;
SELECT table_name, policy FROM cosmosrep.tables ORDER BY table_name::text;
RESET ROLE;

SET ROLE regress_cr_owner;
SELECT cosmosrep.disable_table('owned');
RESET ROLE;

--
-- Disabling
--

SELECT cosmosrep.disable_table('orders');

-- the columns and the trigger are gone, the data stays
SELECT pg_temp.columns_of('orders');
SELECT pg_temp.triggers_of('orders');
SELECT id, item, qty FROM orders ORDER BY id;
SELECT table_name FROM cosmosrep.tables ORDER BY table_name::text;

-- writes are plain local writes again
INSERT INTO orders VALUES (8, 'item 8', 8);
SELECT count(*) AS rows FROM orders;

-- and the table can be enabled again, with fresh versions
SELECT cosmosrep.enable_table('orders', policy => 'manual');
SELECT count(*) AS rows, count(DISTINCT _cr_version) = count(*) AS versions_distinct,
       bool_and(_cr_base = 0) AS bases_zero
  FROM orders;
SELECT table_name, policy FROM cosmosrep.tables ORDER BY table_name::text;

--
-- Keys from sequences, and cosmosrep.global_id()
--

-- a serial key: every region would issue the same numbers
CREATE TABLE seq_keys (id serial PRIMARY KEY, v text);
SELECT cosmosrep.enable_table('seq_keys');
SELECT cosmosrep.disable_table('seq_keys');
-- an identity key, refused when the setting says so, and nothing changes
CREATE TABLE ident_keys (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
SET cosmosrep.sequence_keys = refuse;
SELECT cosmosrep.enable_table('ident_keys');
SELECT count(*) AS enabled FROM cosmosrep.tables WHERE table_name = 'ident_keys'::regclass;
SELECT pg_temp.columns_of('ident_keys');
SET cosmosrep.sequence_keys = allow;
SELECT cosmosrep.enable_table('ident_keys');
RESET cosmosrep.sequence_keys;
-- the switch README shows, then no warning
SELECT cosmosrep.disable_table('ident_keys');
ALTER TABLE ident_keys ALTER COLUMN id DROP IDENTITY IF EXISTS,
                       ALTER COLUMN id SET DEFAULT cosmosrep.global_id();
SELECT cosmosrep.enable_table('ident_keys');
INSERT INTO ident_keys (v) SELECT 'v' || g FROM generate_series(1, 1000) g;
SELECT count(DISTINCT id) AS distinct_ids,
       bool_and(cosmosrep.version_region(id) = 1) AS region_bits
  FROM ident_keys;
-- rising within the region
SELECT a < b AS rising FROM (SELECT cosmosrep.global_id() AS a, cosmosrep.global_id() AS b) ids;

DROP FUNCTION resolve_orders(orders, orders, boolean, orders[]);
DROP TABLE orders, scratch, owned, "Sales Dept"."Order Lines", seq_keys, ident_keys;
DROP SCHEMA "Sales Dept";
REVOKE USAGE ON SCHEMA cosmosrep FROM regress_cr_owner, regress_cr_other;
DROP EXTENSION cosmosrep CASCADE;
DROP ROLE regress_cr_owner, regress_cr_other;
