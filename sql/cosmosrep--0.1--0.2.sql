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

-- Version vectors (src/seen.c): what each write had seen, per row
-- (_cr_seen of every multi-region table) and per tombstone; the writes of
-- this region that a remote write replaced unseen; the arbiter that runs
-- the resolvers; the check of an insert that a delete overtook.
ALTER TABLE cosmosrep.tombstone ADD COLUMN seen bytea;

CREATE TABLE cosmosrep.lost_write (
    relid oid   NOT NULL,
    key   bytea NOT NULL,
    lost  bytea NOT NULL,
    PRIMARY KEY (relid, key)
);
REVOKE ALL ON cosmosrep.lost_write FROM PUBLIC;
COMMENT ON TABLE cosmosrep.lost_write IS
    'writes of this region that a concurrent remote write replaced, per key, until the region writes the key again';

CREATE FUNCTION cosmosrep.arbiter()
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_arbiter'
LANGUAGE C STABLE;
COMMENT ON FUNCTION cosmosrep.arbiter() IS
    'the region that resolves the conflicts of tables under a resolver: the first write region in failover priority order';
GRANT EXECUTE ON FUNCTION cosmosrep.arbiter() TO PUBLIC;

CREATE FUNCTION cosmosrep.check_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'cosmosrep_check_insert'
LANGUAGE C;
COMMENT ON FUNCTION cosmosrep.check_insert() IS
    'row trigger: refuses an insert that a delete of the same key overtook';
GRANT EXECUTE ON FUNCTION cosmosrep.check_insert() TO PUBLIC;

CREATE OR REPLACE FUNCTION cosmosrep.on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        IF obj.object_type = 'table' THEN
            DELETE FROM cosmosrep.replicated_table WHERE relid::oid = obj.objid;
            DELETE FROM cosmosrep.policy_history WHERE relid::oid = obj.objid;
            DELETE FROM cosmosrep.tombstone WHERE relid = obj.objid;
            DELETE FROM cosmosrep.lost_write WHERE relid = obj.objid;
            DELETE FROM cosmosrep.conflict WHERE relid = obj.objid;
            DELETE FROM cosmosrep.conflict_shape WHERE relid = obj.objid;
            DELETE FROM cosmosrep.ddl_column WHERE relid = obj.objid;
            DELETE FROM cosmosrep.ddl_table WHERE relid = obj.objid;
        ELSIF obj.object_type = 'trigger'
              AND obj.address_names[3] IN ('cosmosrep_stamp', 'cosmosrep_truncate',
                                           'cosmosrep_insert_check')
              AND EXISTS (SELECT 1 FROM cosmosrep.replicated_table
                           WHERE relid::oid = to_regclass(quote_ident(obj.address_names[1])
                                                || '.' || quote_ident(obj.address_names[2]))) THEN
            RAISE EXCEPTION 'multi-region table "%" must keep trigger "%"',
                obj.address_names[2], obj.address_names[3]
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'Call cosmosrep.disable_table first.';
        ELSIF obj.object_type = 'function'
              AND EXISTS (SELECT 1 FROM cosmosrep.replicated_table t, pg_class c
                           WHERE c.oid = t.relid
                             AND t.resolver = quote_ident(obj.address_names[1])
                                              || '.' || quote_ident(obj.address_names[2])
                             AND obj.address_args[1] IS NOT NULL
                             AND to_regtype(obj.address_args[1]) = c.reltype) THEN
            RAISE EXCEPTION 'cannot drop function % because it resolves conflicts of a multi-region table',
                obj.object_identity
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'Change the policy with cosmosrep.alter_table_policy first.';
        END IF;
    END LOOP;
END
$$;

-- Schema changes of multi-region tables (ddl.c)
-- Every name each column of a multi-region table had before and after
-- each replicated schema change, here or where it came from: apply maps
-- a row of the old shape that arrives after the change by these names
-- (a column renamed or dropped here, or added here), and a column added
-- with a default gets the value the rows that existed then got (missing:
-- PostgreSQL's attmissingval as text, which a later table rewrite
-- forgets).  State, not configuration: not dumped.  Kept until the
-- table is dropped.
CREATE TABLE cosmosrep.ddl_column (
    relid   oid  NOT NULL,
    attnum  int2 NOT NULL,
    attname name NOT NULL,
    missing text,
    PRIMARY KEY (relid, attnum, attname)
);
REVOKE ALL ON cosmosrep.ddl_column FROM PUBLIC;
COMMENT ON TABLE cosmosrep.ddl_column IS
    'the names the columns of multi-region tables had across replicated schema changes';

-- The same for the names of the tables (a rename or SET SCHEMA).
CREATE TABLE cosmosrep.ddl_table (
    relid   oid  NOT NULL,
    nspname name NOT NULL,
    relname name NOT NULL,
    PRIMARY KEY (nspname, relname, relid)
);
REVOKE ALL ON cosmosrep.ddl_table FROM PUBLIC;
COMMENT ON TABLE cosmosrep.ddl_table IS
    'the names multi-region tables had across replicated schema changes';

CREATE FUNCTION cosmosrep.replicate_ddl(statement text)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_replicate_ddl'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.replicate_ddl(text) IS
    'runs one statement that changes a multi-region table and applies it in every region';
-- PUBLIC may call it: it runs the statement as the caller (SECURITY
-- INVOKER), who needs the rights the statement needs; other regions run
-- it as the table's owner.
GRANT EXECUTE ON FUNCTION cosmosrep.replicate_ddl(text) TO PUBLIC;

-- Every multi-region table gets the column and the trigger that
-- enable_table gives a table under 0.2.  The column starts NULL: a row
-- written before counts as having seen its version and its base.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT relid FROM cosmosrep.replicated_table LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN _cr_seen bytea', t);
        EXECUTE format('CREATE TRIGGER cosmosrep_insert_check AFTER INSERT ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION cosmosrep.check_insert()', t);
    END LOOP;
END
$$;

-- The arbiter records the conflicts under a resolver; the other regions
-- keep theirs apart until its resolution arrives.
CREATE OR REPLACE VIEW cosmosrep.conflicts WITH (security_barrier) AS
    SELECT c.conflict_id,
           c.detected_at,
           c.relid::regclass AS table_name,
           (SELECT pg_catalog.jsonb_object_agg(a.attname,
                       coalesce(r.remote_row, r.local_row) OPERATOR(pg_catalog.->) a.attname::text)
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_attribute a
                ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = c.relid AND i.indisprimary
               AND coalesce(r.remote_row, r.local_row) IS NOT NULL) AS key,
           c.kind,
           lr.region_name AS local_region,
           rr.region_name AS remote_region,
           c.local_version,
           c.remote_version,
           r.local_row,
           r.remote_row,
           c.policy,
           c.resolution,
           coalesce(r.winner_row,
                    CASE c.resolution WHEN 'remote_applied' THEN r.remote_row
                                      WHEN 'local_kept' THEN r.local_row
                                      -- manual: the row held until resolved
                                      WHEN 'pending' THEN
                                          CASE WHEN c.remote_version OPERATOR(pg_catalog.>) c.local_version
                                               THEN r.remote_row ELSE r.local_row END
                    END) AS winner_row,
           -- an error may quote the row (a trigger's message)
           CASE WHEN NOT pg_catalog.row_security_active(c.relid) THEN c.error END AS error,
           c.resolved_at,
           c.resolved_by
      FROM cosmosrep.conflict c
      -- OFFSET 0: each row read once, not again wherever the view uses it
      CROSS JOIN LATERAL (SELECT cosmosrep.conflict_row(c.ctid, 'local') AS local_row,
                                 cosmosrep.conflict_row(c.ctid, 'remote') AS remote_row,
                                 cosmosrep.conflict_row(c.ctid, 'winner') AS winner_row
                          OFFSET 0) r
      LEFT JOIN cosmosrep.region lr ON lr.region_id = c.local_region
      LEFT JOIN cosmosrep.region rr ON rr.region_id = c.remote_region
     WHERE pg_catalog.has_table_privilege(c.relid, 'SELECT')
       -- decided by version until the arbiter resolves it: tentative_conflicts
       AND c.resolution OPERATOR(pg_catalog.<>) 'tentative';

-- The conflicts under a resolver that this region decided by version, as
-- every region but the arbiter does, and that no arbiter's resolution has
-- reached yet (a region that becomes the arbiter resolves them).
CREATE VIEW cosmosrep.tentative_conflicts WITH (security_barrier) AS
    SELECT c.conflict_id,
           c.detected_at,
           c.relid::regclass AS table_name,
           cosmosrep.tombstone_key_text(c.relid, c.key) AS key,
           c.kind,
           c.local_version,
           c.remote_version,
           pg_catalog.int8larger(c.local_version, c.remote_version) AS held_version
      FROM cosmosrep.conflict c
     WHERE c.resolution OPERATOR(pg_catalog.=) 'tentative' AND c.resolved_at IS NULL
       AND pg_catalog.has_table_privilege(c.relid, 'SELECT');
COMMENT ON VIEW cosmosrep.tentative_conflicts IS
    'conflicts under a resolver held by version here until the arbiter resolves them';
GRANT SELECT ON cosmosrep.tentative_conflicts TO PUBLIC;

-- A schema change fences the table in every other region first
-- (ddl_fence.c): the link roles call these.
CREATE FUNCTION cosmosrep.fence_table(schema_name text, table_name text, region_id smallint,
                                     stop_writes boolean)
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'cosmosrep_fence_table'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.fence_table(text, text, smallint, boolean) IS
    'called by a region about to change a multi-region table: refuses local changes of it (and with stop_writes local writes) until the change arrives, and returns how far that region must apply this one''s changes first';
-- Only link roles (grant_link_role): it stops the writes of a table.
REVOKE ALL ON FUNCTION cosmosrep.fence_table(text, text, smallint, boolean) FROM PUBLIC;

CREATE FUNCTION cosmosrep.unfence_table(schema_name text, table_name text, region_id smallint)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_unfence_table'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.unfence_table(text, text, smallint) IS
    'called by a region whose change of a multi-region table failed: lifts its fence';
REVOKE ALL ON FUNCTION cosmosrep.unfence_table(text, text, smallint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION cosmosrep.grant_link_role(role regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    t record;
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r
         WHERE r.oid OPERATOR(pg_catalog.=) role::pg_catalog.oid) THEN
        RAISE EXCEPTION 'link role "%" is a superuser', role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Regions connect as a role with LOGIN and REPLICATION only; create one (README, "Security").';
    END IF;
    EXECUTE pg_catalog.format('GRANT SELECT ON cosmosrep.region, cosmosrep.replicated_table,'
                              ' cosmosrep.tombstone, cosmosrep.policy_history TO %s', role);
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION cosmosrep.add_region(smallint, text, text),'
                              ' cosmosrep.forget_region(text), cosmosrep.output_plugin_allowed(),'
                              ' cosmosrep.fence_table(text, text, smallint, boolean),'
                              ' cosmosrep.unfence_table(text, text, smallint)'
                              ' TO %s', role);
    FOR t IN SELECT c.oid::pg_catalog.regclass AS rel, n.nspname
               FROM cosmosrep.replicated_table rt
               JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) rt.relid::pg_catalog.oid
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace LOOP
        EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %s', t.nspname, role);
        EXECUTE pg_catalog.format('GRANT SELECT ON %s TO %s', t.rel, role);
    END LOOP;
END
$$;
COMMENT ON FUNCTION cosmosrep.grant_link_role(regrole) IS
    'grants a role what other regions need when they connect as it (the link role)';

-- The roles grant_link_role was called for (they may execute add_region)
-- get the new functions too.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::pg_catalog.regrole AS role
               FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
              WHERE p.oid OPERATOR(pg_catalog.=) 'cosmosrep.add_region(smallint, text, text)'::pg_catalog.regprocedure
                AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
                AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
                AND a.grantee OPERATOR(pg_catalog.<>) 0 LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION cosmosrep.fence_table(text, text, smallint, boolean),'
                                  ' cosmosrep.unfence_table(text, text, smallint) TO %s', r.role);
    END LOOP;
END
$$;

-- Resolvers by name (pg_upgrade of a region): replicated_table and
-- policy_history keep the schema-qualified name of a resolver as text
-- instead of its OID as regprocedure, a type pg_upgrade refuses in user
-- tables (function OIDs change); the name is looked up with the table's
-- row type at use.  cosmosrep.tables still shows the function as
-- regprocedure, found by cosmosrep.resolver_procedure (the view is
-- replaced twice: the column it reads cannot change type under it).
CREATE FUNCTION cosmosrep.resolver_procedure(relation regclass, resolver text)
RETURNS regprocedure
AS 'MODULE_PATHNAME', 'cosmosrep_resolver_procedure'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION cosmosrep.resolver_procedure(regclass, text) IS
    'the function a multi-region table''s configuration names as its resolver, NULL if there is none';
-- PUBLIC may call it: behind cosmosrep.tables; it looks up a function.
GRANT EXECUTE ON FUNCTION cosmosrep.resolver_procedure(regclass, text) TO PUBLIC;

CREATE OR REPLACE VIEW cosmosrep.tables WITH (security_barrier) AS
    SELECT t.relid AS table_name,
           t.policy,
           t.path,
           NULL::pg_catalog.regprocedure AS resolver,
           t.enabled_at
      FROM cosmosrep.replicated_table t
     WHERE pg_catalog.has_table_privilege(t.relid, 'SELECT');
ALTER TABLE cosmosrep.replicated_table ALTER COLUMN resolver TYPE text
    USING pg_catalog.quote_ident((pg_catalog.pg_identify_object_as_address(
               'pg_catalog.pg_proc'::pg_catalog.regclass, resolver, 0)).object_names[1])
          OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||)
          pg_catalog.quote_ident((pg_catalog.pg_identify_object_as_address(
               'pg_catalog.pg_proc'::pg_catalog.regclass, resolver, 0)).object_names[2]);
-- policy_history is a user catalog table, which PostgreSQL does not
-- rewrite: a new text column replaces the regprocedure one (the output
-- plugin finds the column by name, of either type).
ALTER TABLE cosmosrep.policy_history RENAME COLUMN resolver TO resolver_0_1;
ALTER TABLE cosmosrep.policy_history ADD COLUMN resolver text;
UPDATE cosmosrep.policy_history
   SET resolver = pg_catalog.quote_ident((pg_catalog.pg_identify_object_as_address(
               'pg_catalog.pg_proc'::pg_catalog.regclass, resolver_0_1, 0)).object_names[1])
          OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||)
          pg_catalog.quote_ident((pg_catalog.pg_identify_object_as_address(
               'pg_catalog.pg_proc'::pg_catalog.regclass, resolver_0_1, 0)).object_names[2])
 WHERE resolver_0_1 IS NOT NULL;
ALTER TABLE cosmosrep.policy_history DROP COLUMN resolver_0_1;
CREATE OR REPLACE VIEW cosmosrep.tables WITH (security_barrier) AS
    SELECT t.relid AS table_name,
           t.policy,
           t.path,
           cosmosrep.resolver_procedure(t.relid, t.resolver) AS resolver,
           t.enabled_at
      FROM cosmosrep.replicated_table t
     WHERE pg_catalog.has_table_privilege(t.relid, 'SELECT');

-- The catalog keeps a resolver by its name: renaming it, moving it to
-- another schema or renaming its schema would lose it, and is refused
-- as its drop is (on_sql_drop).
CREATE FUNCTION cosmosrep.on_resolver_renamed()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT r.resolver FROM cosmosrep.replicated_table r
              WHERE r.resolver IS NOT NULL
                AND cosmosrep.resolver_procedure(r.relid, r.resolver) IS NULL LOOP
        RAISE EXCEPTION 'cannot rename function % because it resolves conflicts of a multi-region table',
            t.resolver
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Change the policy with cosmosrep.alter_table_policy first.';
    END LOOP;
END
$$;
COMMENT ON FUNCTION cosmosrep.on_resolver_renamed() IS
    'event trigger: refuses to rename or move a resolver in use, which the catalog keeps by name';
-- PUBLIC may call it: an event trigger function (SECURITY DEFINER, pinned
-- search_path) that every role's ALTER FUNCTION and ALTER SCHEMA fire.
GRANT EXECUTE ON FUNCTION cosmosrep.on_resolver_renamed() TO PUBLIC;
CREATE EVENT TRIGGER cosmosrep_resolver_renamed ON ddl_command_end
    WHEN TAG IN ('ALTER FUNCTION', 'ALTER SCHEMA')
    EXECUTE FUNCTION cosmosrep.on_resolver_renamed();

--
-- pg_upgrade of a region (src/upgrade.c)
--

-- The upgrade this region is prepared for: at most one row, from
-- cosmosrep.prepare_upgrade to cosmosrep.finish_upgrade.  While it
-- exists the region refuses local writes to multi-region tables and
-- applies nothing.  State, not configuration: not dumped (pg_upgrade
-- keeps it: it keeps every table's data).
CREATE TABLE cosmosrep.upgrade (
    prepared_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    drained_at  timestamptz,  -- when every peer had everything written here
    wal_end     pg_lsn,       -- the end of the WAL every peer confirmed
    clock       bigint        -- the clock then (cosmosrep.current_version())
);
CREATE UNIQUE INDEX upgrade_one ON cosmosrep.upgrade ((true));
REVOKE ALL ON cosmosrep.upgrade FROM PUBLIC;
COMMENT ON TABLE cosmosrep.upgrade IS
    'the pg_upgrade this region is prepared for, if any: it stops local writes and apply';
CREATE TRIGGER config_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cosmosrep.upgrade
    FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.config_changed();

-- How far this region had applied each peer's stream when it was
-- prepared for an upgrade (its replication origins, which pg_upgrade of
-- PostgreSQL 15 does not keep).  State: not dumped.
CREATE TABLE cosmosrep.upgrade_origin (
    region_id  smallint PRIMARY KEY,
    remote_lsn pg_lsn   NOT NULL
);
REVOKE ALL ON cosmosrep.upgrade_origin FROM PUBLIC;
COMMENT ON TABLE cosmosrep.upgrade_origin IS
    'how far this region applied each peer, saved for pg_upgrade by cosmosrep.prepare_upgrade';

CREATE FUNCTION cosmosrep.upgrade_stop_writes()
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_upgrade_stop_writes'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.upgrade_stop_writes() IS
    'step 1 of cosmosrep.prepare_upgrade: records the upgrade, which stops local writes and apply at commit';
REVOKE ALL ON FUNCTION cosmosrep.upgrade_stop_writes() FROM PUBLIC;

CREATE FUNCTION cosmosrep.upgrade_drain(timeout interval)
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'cosmosrep_upgrade_drain'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.upgrade_drain(interval) IS
    'step 2 of cosmosrep.prepare_upgrade: waits until every peer has this region''s writes, saves origins and clock';
REVOKE ALL ON FUNCTION cosmosrep.upgrade_drain(interval) FROM PUBLIC;

-- A procedure: each step commits (the writes stop for every session at
-- the first commit).  No SET clause: a procedure that has one cannot
-- commit; every name is qualified.
CREATE PROCEDURE cosmosrep.prepare_upgrade(timeout interval DEFAULT '1 min')
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM cosmosrep.upgrade_stop_writes();
    COMMIT;
    PERFORM cosmosrep.upgrade_drain(timeout);
    COMMIT;
END
$$;
COMMENT ON PROCEDURE cosmosrep.prepare_upgrade(interval) IS
    'before pg_upgrade: stops local writes and apply, waits until every peer has this region''s writes, saves origins and clock';
REVOKE ALL ON PROCEDURE cosmosrep.prepare_upgrade(interval) FROM PUBLIC;

CREATE FUNCTION cosmosrep.finish_upgrade()
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_finish_upgrade'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.finish_upgrade() IS
    'after pg_upgrade: restores the clock, the peers'' slots and the origins, and resumes writes and apply';
REVOKE ALL ON FUNCTION cosmosrep.finish_upgrade() FROM PUBLIC;
