--
-- The cosmosrep output plugin: the options a logical replication client
-- must pass, and what it refuses.
--
CREATE EXTENSION cosmosrep;
SELECT cosmosrep.create_region('eastus2', 'host=10.0.0.1 dbname=shop');

-- creating a slot needs no option
SELECT slot_name FROM pg_create_logical_replication_slot('regress_cr_slot', 'cosmosrep');
SELECT slot_name, plugin, slot_type FROM pg_replication_slots WHERE slot_name = 'regress_cr_slot';

CREATE TABLE items (id int PRIMARY KEY, name text);
SELECT cosmosrep.enable_table('items');
INSERT INTO items VALUES (1, 'one');

-- Bad input: no protocol_version
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('regress_cr_slot', NULL, NULL);

-- Bad input: a protocol version this region does not speak
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('regress_cr_slot', NULL, NULL,
    'protocol_version', '99');

-- both versions this region writes are served: 2 (0.1's apply workers),
-- whose rows lack _cr_seen, and 3, whose rows carry it
SELECT (SELECT bool_or(position(convert_to('_cr_seen', 'UTF8') IN data) > 0)
          FROM pg_logical_slot_peek_binary_changes('regress_cr_slot', NULL, NULL,
               'protocol_version', '2')) AS version_2_sends_cr_seen,
       (SELECT bool_or(position(convert_to('_cr_seen', 'UTF8') IN data) > 0)
          FROM pg_logical_slot_peek_binary_changes('regress_cr_slot', NULL, NULL,
               'protocol_version', '3')) AS version_3_sends_cr_seen;

-- Bad input: an unknown option
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('regress_cr_slot', NULL, NULL,
    'protocol_version', '2', 'colour', 'blue');

-- Bad input: text output from a binary plugin
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_cr_slot', NULL, NULL,
    'protocol_version', '2');

-- with the right options the plugin streams the changes
SELECT count(*) > 0 AS has_changes
  FROM pg_logical_slot_peek_binary_changes('regress_cr_slot', NULL, NULL,
    'protocol_version', '2');

-- a small transaction is one CopyData message (one row here), BEGIN to
-- COMMIT: BEGIN first, the 26-byte COMMIT last (the launcher's stable
-- version messages, which stand between transactions, aside)
SELECT pg_replication_slot_advance('regress_cr_slot', pg_current_wal_lsn()) IS NOT NULL AS advanced;
INSERT INTO items VALUES (2, 'two');
SELECT count(*) AS messages,
       bool_and(get_byte(data, 0) = ascii('B')) AS begins_with_begin,
       bool_and(get_byte(data, length(data) - 26) = ascii('C')) AS ends_with_commit
  FROM pg_logical_slot_get_binary_changes('regress_cr_slot', NULL, NULL,
    'protocol_version', '2')
 WHERE get_byte(data, 0) <> ascii('M');

-- a large transaction is streamed in chunks of about 64 kB, not one
-- message per row: BEGIN opens the first chunk, COMMIT closes the last
INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(3, 5002) g;
SELECT count(*) BETWEEN 5 AND 20 AS few_chunks,
       max(length(data)) < 70000 AS bounded,
       (array_agg(get_byte(data, 0) ORDER BY lsn))[1] = ascii('B') AS begin_first,
       (array_agg(get_byte(data, length(data) - 26) ORDER BY lsn DESC))[1] = ascii('C') AS commit_last
  FROM pg_logical_slot_get_binary_changes('regress_cr_slot', NULL, NULL,
    'protocol_version', '2')
 WHERE get_byte(data, 0) <> ascii('M');

SELECT pg_drop_replication_slot('regress_cr_slot');
DROP TABLE items;
DROP EXTENSION cosmosrep CASCADE;
