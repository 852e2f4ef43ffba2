-- What keeps regions convergent, seen from one region: tombstones for
-- deletes, key changes and truncates; the triggers that stamp versions
-- stay in place; the clock refuses versions from the far future
CREATE EXTENSION cosmosrep;
SELECT cosmosrep.create_region('eastus', 'host=localhost dbname=regression');
CREATE TABLE events (id int, at timestamptz, score float8, note text,
                     PRIMARY KEY (id, at, score));
INSERT INTO events VALUES (1, '2026-01-01 10:00+00', 0.1, 'a'),
                          (2, '2026-01-01 11:00+00', 1e-300, 'b'),
                          (3, '2026-01-01 12:00+00', 2.5, 'c');
SELECT cosmosrep.enable_table('events');

-- a delete leaves a tombstone whose key does not depend on settings: the
-- same key deleted again under other settings finds the same tombstone
SET TimeZone = 'Asia/Tokyo';
SET DateStyle = 'SQL, DMY';
SET extra_float_digits = 0;
DELETE FROM events WHERE id = 1;
RESET TimeZone;
RESET DateStyle;
RESET extra_float_digits;
INSERT INTO events VALUES (1, '2026-01-01 10:00+00', 0.1, 'a again');
DELETE FROM events WHERE id = 1;
SELECT count(*) AS tombstones FROM cosmosrep.tombstone;
SET TimeZone = 'UTC';
SELECT table_name, key FROM cosmosrep.tombstones;

-- an update that changes the key leaves a tombstone for the old key
UPDATE events SET id = 20 WHERE id = 2;
SELECT key FROM cosmosrep.tombstones ORDER BY key;

-- a truncate becomes the table's horizon and replaces older tombstones
TRUNCATE events;
SELECT key, version > 0 AS versioned FROM cosmosrep.tombstones;
RESET TimeZone;

-- Bad input: dropping the trigger that stamps versions
DROP TRIGGER cosmosrep_stamp ON events;

-- Bad input: dropping the truncate trigger
DROP TRIGGER cosmosrep_truncate ON events;

-- Bad input: disabling the trigger
ALTER TABLE events DISABLE TRIGGER cosmosrep_stamp;

-- Bad input: disabling every trigger
ALTER TABLE events DISABLE TRIGGER ALL;

-- Bad input: making the trigger fire during apply
ALTER TABLE events ENABLE ALWAYS TRIGGER cosmosrep_stamp;
ALTER TABLE events ENABLE REPLICA TRIGGER cosmosrep_truncate;

-- the triggers are unchanged
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'events'::regclass ORDER BY tgname;

-- Bad input: a version far ahead of the clock (the detail says how far)
\set VERBOSITY terse
SELECT cosmosrep.observe_version(9000000000000000001);
\set VERBOSITY default
SELECT cosmosrep.next_version() < 9000000000000000000 AS clock_not_dragged;

-- a user who is not a superuser drops and alters their own tables,
-- multi-region or not
CREATE ROLE regress_cr_user;
GRANT CREATE ON SCHEMA public TO regress_cr_user;
SET ROLE regress_cr_user;
CREATE TABLE mine (id int PRIMARY KEY);
ALTER TABLE mine ADD COLUMN v text;
DROP TABLE mine;
CREATE TABLE mine_mr (id int PRIMARY KEY);
SELECT cosmosrep.enable_table('mine_mr');
DELETE FROM mine_mr;
DROP TABLE mine_mr;
RESET ROLE;
SELECT count(*) FROM cosmosrep.tables WHERE table_name::text = 'mine_mr';

-- disabling drops both triggers and the tombstones
SELECT cosmosrep.disable_table('events');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass;
SELECT count(*) FROM cosmosrep.tombstone;
DROP TABLE events;
REVOKE CREATE ON SCHEMA public FROM regress_cr_user;
DROP ROLE regress_cr_user;
DROP EXTENSION cosmosrep;
