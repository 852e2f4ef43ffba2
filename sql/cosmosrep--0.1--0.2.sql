/* cosmosrep--0.1--0.2.sql: update script from 0.1 to 0.2 */

\echo Use "ALTER EXTENSION cosmosrep UPDATE TO '0.2'" to load this file. \quit

-- EVERY CATALOG CHANGE OF 0.2 GOES IN BOTH FILES: in the install script
-- cosmosrep--0.2.sql (a new database) and here (a database that has 0.1).
-- Test 057 installs 0.2, installs 0.1 and updates it, and compares the
-- two catalogs; it fails on a change made in one file only.
--
-- The 0.2 library serves either catalog: between the restart on the new
-- library and this update it runs under 0.1's definitions, so a C
-- function of 0.1 keeps its name, arguments and result type in 0.2; a
-- new result column comes from a new function (as protocol_version).

-- replication_status shows the protocol version of each stream (a
-- column added at the end: CREATE OR REPLACE keeps views and grants that
-- depend on it); library_version() tells which library the server runs.
CREATE FUNCTION cosmosrep.peer_protocol_version(peer_id integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'cosmosrep_peer_protocol_version'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.peer_protocol_version(integer) IS
    'the cosmosrep protocol version of the stream from peer region peer_id, or NULL before it started';
-- PUBLIC may call it: behind cosmosrep.replication_status; a number.
GRANT EXECUTE ON FUNCTION cosmosrep.peer_protocol_version(integer) TO PUBLIC;

CREATE FUNCTION cosmosrep.library_version()
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_library_version'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.library_version() IS
    'the version of the cosmosrep library this server runs, which may be newer than the extension''s catalog until ALTER EXTENSION cosmosrep UPDATE';
GRANT EXECUTE ON FUNCTION cosmosrep.library_version() TO PUBLIC;

CREATE OR REPLACE VIEW cosmosrep.replication_status AS
    SELECT src.region_name AS source_region,
           dst.region_name AS target_region,
           CASE WHEN src.paused THEN 'paused'
                ELSE coalesce(s.state, 'stopped')
           END AS state,
           s.worker_pid,
           s.received_lsn,
           s.applied_lsn,
           greatest(pg_catalog.pg_wal_lsn_diff(s.peer_end_lsn,
                        greatest(s.received_lsn, s.applied_lsn)), 0)::bigint AS lag_bytes,
           CASE WHEN s.peer_end_lsn <= greatest(s.received_lsn, s.applied_lsn) THEN 0
                ELSE extract(epoch FROM pg_catalog.now() - s.last_commit_time)
           END AS lag_seconds,
           s.last_commit_time,
           s.transactions_applied,
           s.changes_applied,
           s.latency_p50_ms,
           s.latency_p99_ms,
           s.last_error,
           s.last_error_at,
           s.conflicts,
           cosmosrep.peer_protocol_version(src.region_id) AS protocol_version
      FROM cosmosrep.region src
      JOIN cosmosrep.region dst ON dst.is_local
      LEFT JOIN cosmosrep.peer_status() s ON s.peer_id = src.region_id
     WHERE NOT src.is_local;
COMMENT ON VIEW cosmosrep.replication_status IS
    'per region pair (source to this region): state, lag, latency percentiles, throughput, the last error and the protocol version of the stream';
