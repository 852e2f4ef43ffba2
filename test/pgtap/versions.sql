--
-- Versions: the layout documented in hlc.h (milliseconds since 2020,
-- logical counter, region id), the order in which a session gets them,
-- and the versions the row trigger gives local writes.
--
\unset ECHO
\set QUIET 1
\set ON_ERROR_STOP true
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION cosmosrep;
SELECT plan(21);

SELECT throws_ok('SELECT cosmosrep.next_version()', '55000',
                 'this database is not a cosmosrep region',
                 'next_version needs a region');

SELECT is(cosmosrep.create_region('pgtap', 'host=localhost dbname=postgres'), 1::smallint,
          'the first region gets id 1');

-- decoding versions built by hand
SELECT is(cosmosrep.version_region(((1::bigint << 13) | 5) << 8 | 7), 7::smallint,
          'version_region is the low 8 bits');
SELECT is(cosmosrep.version_time(0), '2020-01-01 00:00:00+00'::timestamptz,
          'version 0 is at 2020-01-01 00:00 UTC');
SELECT is(cosmosrep.version_time(((123::bigint << 13) | 8191) << 8 | 255),
          '2020-01-01 00:00:00.123+00'::timestamptz,
          'version_time ignores the logical counter and the region');
SELECT is(cosmosrep.version_time(
              ((extract(epoch FROM '2024-02-29 12:34:56.789+00'::timestamptz
                                   - '2020-01-01 00:00:00+00'::timestamptz) * 1000)::bigint
               << 21) | 1),
          '2024-02-29 12:34:56.789+00'::timestamptz,
          'version_time has millisecond precision');

-- versions issued here
SELECT is(cosmosrep.version_region(cosmosrep.next_version()), 1::smallint,
          'next_version carries the local region id');
SELECT ok(cosmosrep.version_time(cosmosrep.next_version())
              BETWEEN now() - interval '1 minute' AND clock_timestamp() + interval '1 minute',
          'next_version carries the wall-clock time');

CREATE TEMP TABLE issued AS
    SELECT n, cosmosrep.next_version() AS version FROM generate_series(1, 10000) n;
SELECT is((SELECT count(*) FROM (
               SELECT version <= lag(version) OVER (ORDER BY n) AS out_of_order
                 FROM issued) s
            WHERE out_of_order),
          0::bigint,
          'next_version is strictly increasing within a session, over 10000 calls');
SELECT is((SELECT count(DISTINCT version) FROM issued), 10000::bigint,
          '10000 calls give 10000 distinct versions');

SELECT cmp_ok(cosmosrep.current_version(), '>=',
              (SELECT max(version) FROM issued) & ~255::bigint,
              'current_version is not behind the last version issued');
SELECT is(cosmosrep.version_region(cosmosrep.current_version()), 0::smallint,
          'current_version carries region 0');
SELECT cmp_ok(cosmosrep.next_version(), '>', cosmosrep.current_version(),
              'next_version is greater than current_version');

-- observing a version from a clock two seconds ahead moves this clock past it
CREATE TEMP TABLE observed AS
    SELECT (cosmosrep.current_version() + (2000::bigint << 21)) | 2 AS version;
SELECT lives_ok('SELECT cosmosrep.observe_version(version) FROM observed',
                'observe_version accepts a version from another region');
SELECT cmp_ok(cosmosrep.next_version(), '>', (SELECT version FROM observed),
              'a version issued after observing one is greater');
SELECT lives_ok('SELECT cosmosrep.observe_version(1)',
                'observe_version accepts an old version');
SELECT cmp_ok(cosmosrep.next_version(), '>', (SELECT version FROM observed),
              'observing an old version does not move the clock back');

-- local writes
CREATE TABLE pgtap_orders (id int PRIMARY KEY, qty int);
SELECT lives_ok($$SELECT cosmosrep.enable_table('pgtap_orders')$$, 'enable_table');
INSERT INTO pgtap_orders VALUES (1, 1);
CREATE TEMP TABLE before_update AS SELECT _cr_version AS version FROM pgtap_orders;
UPDATE pgtap_orders SET qty = 2;
SELECT ok((SELECT _cr_version > _cr_base AND _cr_base = (SELECT version FROM before_update)
             FROM pgtap_orders),
          'a local UPDATE gets a version greater than its base, the version it replaced');

-- a row applied from a region whose clock is ahead keeps its version;
-- updating it here still gives a greater version
SET LOCAL session_replication_role = replica;
UPDATE pgtap_orders SET _cr_version = ((cosmosrep.current_version() + (2000::bigint << 21)) | 2);
SET LOCAL session_replication_role = origin;
SELECT is((SELECT cosmosrep.version_region(_cr_version) FROM pgtap_orders), 2::smallint,
          'a write with the trigger disabled (as apply does) keeps its version');
CREATE TEMP TABLE remote AS SELECT _cr_version AS version FROM pgtap_orders;
UPDATE pgtap_orders SET qty = 3;
SELECT ok((SELECT _cr_version > _cr_base AND _cr_base = (SELECT version FROM remote)
             FROM pgtap_orders),
          'a local UPDATE of a row written by a clock ahead of ours gets a greater version');

SELECT * FROM finish();
ROLLBACK;
