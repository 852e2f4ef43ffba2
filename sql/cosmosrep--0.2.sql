/* cosmosrep--0.2.sql: install script */

\echo Use "CREATE EXTENSION cosmosrep" to load this file. \quit

-- The schema belongs to the extension, so DROP EXTENSION removes it.
CREATE SCHEMA cosmosrep;
GRANT USAGE ON SCHEMA cosmosrep TO PUBLIC;

--
-- Configuration tables.  Both are dumped by pg_dump with the database
-- (pg_extension_config_dump) and readable only through the views below.
--

-- One row per region of the group; exactly one of them is this database.
CREATE TABLE cosmosrep.region (
    region_id         smallint    PRIMARY KEY
                      CHECK (region_id BETWEEN 1 AND 255),
    region_name       text        NOT NULL UNIQUE,
    dsn               text        NOT NULL,
    is_local          boolean     NOT NULL DEFAULT false,
    failover_priority integer     NOT NULL DEFAULT 0,  -- 0: none; 1 is tried first
    failover_version  bigint      NOT NULL DEFAULT 0,  -- version of the change that set it
    paused            boolean     NOT NULL DEFAULT false,
    accepts_writes    boolean     NOT NULL DEFAULT true,  -- multi-region tables
    writes_version    bigint      NOT NULL DEFAULT 0,     -- version of the change that set it
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX region_one_local ON cosmosrep.region (is_local) WHERE is_local;
SELECT pg_catalog.pg_extension_config_dump('cosmosrep.region', '');
REVOKE ALL ON cosmosrep.region FROM PUBLIC;
COMMENT ON TABLE cosmosrep.region IS
    'regions of the group (configuration; read cosmosrep.regions instead)';

-- One row per multi-region table, with its declared conflict policy.
CREATE TABLE cosmosrep.replicated_table (
    relid      regclass    PRIMARY KEY,
    policy     text        NOT NULL
               CHECK (policy IN ('last_writer_wins', 'custom', 'manual')),
    path       name,
    -- the resolver's schema-qualified name (not its OID, which pg_upgrade
    -- does not keep): looked up with the table's row type at use
    resolver   text,
    enabled_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- version of the enable or policy change that set this configuration;
    -- concurrent changes in several regions keep the newest everywhere
    config_version bigint NOT NULL DEFAULT 0,
    CHECK (path IS NULL OR policy = 'last_writer_wins'),
    CHECK ((resolver IS NOT NULL) = (policy = 'custom'))
);
SELECT pg_catalog.pg_extension_config_dump('cosmosrep.replicated_table', '');
REVOKE ALL ON cosmosrep.replicated_table FROM PUBLIC;
COMMENT ON TABLE cosmosrep.replicated_table IS
    'multi-region tables and their conflict policy (configuration; read cosmosrep.tables instead)';

-- Changes to either table invalidate the caches of every backend.
CREATE FUNCTION cosmosrep.config_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'cosmosrep_config_changed'
LANGUAGE C;
COMMENT ON FUNCTION cosmosrep.config_changed() IS
    'statement trigger: invalidates cached cosmosrep configuration';
-- PUBLIC may call it: a trigger function: it refuses to run on any table
-- but cosmosrep's own, where it only invalidates caches.
GRANT EXECUTE ON FUNCTION cosmosrep.config_changed() TO PUBLIC;
CREATE TRIGGER config_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cosmosrep.region
    FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.config_changed();
CREATE TRIGGER config_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cosmosrep.replicated_table
    FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.config_changed();

-- Every configuration a multi-region table has had in this region, or that
-- a row arriving here was written under: each row carries the version of
-- the configuration its writer had (_cr_config), and a conflict between
-- two writes made under one configuration is decided by that
-- configuration's policy.  The output plugin reads it while decoding (a
-- user catalog table), to send a configuration before the first row
-- written under it.
CREATE TABLE cosmosrep.policy_history (
    relid          regclass     NOT NULL,
    config_version bigint       NOT NULL,
    policy         text         NOT NULL,
    path           name,
    resolver_0_1   oid,         -- dropped below
    PRIMARY KEY (relid, config_version)
) WITH (user_catalog_table = true);
-- The resolver as in replicated_table, in the column an update from 0.1
-- adds (the update cannot change the type of 0.1's regprocedure column:
-- PostgreSQL does not rewrite a user catalog table), after the one it
-- drops: a new database has the same columns at the same positions.
ALTER TABLE cosmosrep.policy_history DROP COLUMN resolver_0_1;
ALTER TABLE cosmosrep.policy_history ADD COLUMN resolver text;
SELECT pg_catalog.pg_extension_config_dump('cosmosrep.policy_history', '');
REVOKE ALL ON cosmosrep.policy_history FROM PUBLIC;
COMMENT ON TABLE cosmosrep.policy_history IS
    'every configuration of the multi-region tables, by version (configuration)';

-- Versions of deleted rows, so that a late insert or update does not
-- resurrect a row that a newer delete removed.  The key is the binary send
-- form of the primary key (independent of session settings); the empty key
-- is the table's truncate horizon.  State, not configuration: not dumped.
CREATE TABLE cosmosrep.tombstone (
    relid      oid         NOT NULL,
    key        bytea       NOT NULL,
    version    bigint      NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    base       bigint      NOT NULL DEFAULT 0,  -- version of the deleted row
    config     bigint      NOT NULL DEFAULT 0,  -- configuration of the delete
    seen       bytea,                           -- the writes it had seen
    PRIMARY KEY (relid, key)
);
REVOKE ALL ON cosmosrep.tombstone FROM PUBLIC;
COMMENT ON TABLE cosmosrep.tombstone IS
    'primary keys and delete versions of deleted rows of multi-region tables';

-- This region's writes of a key that a remote write replaced without having
-- seen them (a conflict decided by version for now), as exclusions of a
-- version vector (src/seen.c): the region's next write of the key must not
-- claim them.  State, not configuration: not dumped.
CREATE TABLE cosmosrep.lost_write (
    relid oid   NOT NULL,
    key   bytea NOT NULL,
    lost  bytea NOT NULL,
    PRIMARY KEY (relid, key)
);
REVOKE ALL ON cosmosrep.lost_write FROM PUBLIC;
COMMENT ON TABLE cosmosrep.lost_write IS
    'writes of this region that a concurrent remote write replaced, per key, until the region writes the key again';

CREATE FUNCTION cosmosrep.tombstone_key_text(relid oid, key bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_tombstone_key_text'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION cosmosrep.tombstone_key_text(oid, bytea) IS
    'a tombstone key as a row literal of the primary key values';
-- PUBLIC may call it: behind cosmosrep.tombstones; NULL for a table the
-- caller may not read, and it decodes as the table's owner.
GRANT EXECUTE ON FUNCTION cosmosrep.tombstone_key_text(oid, bytea) TO PUBLIC;

CREATE VIEW cosmosrep.tombstones WITH (security_barrier) AS
    SELECT t.relid::regclass AS table_name,
           cosmosrep.tombstone_key_text(t.relid, t.key) AS key,
           t.version,
           t.deleted_at
      FROM cosmosrep.tombstone t
     WHERE pg_catalog.has_table_privilege(t.relid, 'SELECT');
COMMENT ON VIEW cosmosrep.tombstones IS
    'deletes (and truncates, key "(truncated)") remembered for the tables the current user may read';
GRANT SELECT ON cosmosrep.tombstones TO PUBLIC;

-- Tombstones go once every region has applied past them (causal
-- stability); the launcher purges them every cosmosrep.stability_interval.
CREATE FUNCTION cosmosrep.purge_horizon()
RETURNS bigint
AS 'MODULE_PATHNAME', 'cosmosrep_purge_horizon'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.purge_horizon() IS
    'the version at or below which every region has applied every write (0 while some region has announced none)';
-- PUBLIC may call it: a version, no data; it reads cosmosrep's own state as
-- the bootstrap superuser with a pinned search_path.
GRANT EXECUTE ON FUNCTION cosmosrep.purge_horizon() TO PUBLIC;

CREATE FUNCTION cosmosrep.purge_tombstones()
RETURNS bigint
AS 'MODULE_PATHNAME', 'cosmosrep_purge_tombstones'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.purge_tombstones() IS
    'removes the tombstones every region has applied past, now; returns how many';
REVOKE ALL ON FUNCTION cosmosrep.purge_tombstones() FROM PUBLIC;

--
-- Conflicts: every collision of a remote change with a write it had not
-- seen, recorded in each region that detected it.  State, not
-- configuration: not dumped.  Resolved entries are purged after
-- cosmosrep.conflict_retention.
--
CREATE TABLE cosmosrep.conflict (
    conflict_id    bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    detected_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    relid          oid         NOT NULL,
    key            bytea,      -- the primary key as tombstones hold it, for
                               -- entries the feed may hold
    kind           text        NOT NULL, -- insert_exists, insert_deleted, update_update,
                                         -- update_deleted, delete_updated,
                                         -- unique_collision, apply_error
    local_region   smallint    NOT NULL,
    remote_region  smallint    NOT NULL,
    local_version  bigint      NOT NULL,
    remote_version bigint      NOT NULL,
    local_row      bytea,      -- the rows as composite datums of the
    remote_row     bytea,      -- table's row type (cosmosrep.conflict_row)
    policy         text        NOT NULL,
    resolution     text        NOT NULL, -- remote_applied, local_kept, merged,
                                         -- pending, error
    winner_row     bytea,      -- the row a resolver or a user wrote
    error          text,
    resolved_at    timestamptz, -- NULL: waiting in the feed
    resolved_by    text,
    shape          bigint      NOT NULL -- the attributes the rows were formed
                                        -- with (cosmosrep.conflict_shape)
);
-- written by apply (conflict_log.c) and the feed functions only, which
-- keep kind and resolution to the values above.  No btree holds every
-- entry (a heal may record one per row it applies): the history is read
-- by time or by id, which both rise with the order of insertion (BRIN),
-- the feed by id and by key (partial indexes of its entries), and
-- cosmosrep.conflicts reads an entry's rows by its ctid.  The identity
-- alone numbers the entries, uniquely: nothing else inserts.
CREATE INDEX conflict_detected_at ON cosmosrep.conflict USING brin (detected_at, conflict_id);
CREATE UNIQUE INDEX conflict_feed_id ON cosmosrep.conflict (conflict_id) WHERE resolved_at IS NULL;
CREATE INDEX conflict_waiting ON cosmosrep.conflict (relid, key) WHERE resolved_at IS NULL;
COMMENT ON SEQUENCE cosmosrep.conflict_conflict_id_seq IS
    'numbers the conflicts detected in this region';
REVOKE ALL ON cosmosrep.conflict FROM PUBLIC;
COMMENT ON TABLE cosmosrep.conflict IS
    'conflicts detected in this region (read cosmosrep.conflicts instead)';

-- The shapes of the rows in the history: a row is a composite datum of its
-- table's row type as it was when the conflict was recorded, and the
-- table's DDL (ALTER COLUMN TYPE, DROP or ADD COLUMN) changes that type.
-- One row per table and distinct shape (a hash of the attributes), written
-- by apply the first time it records a conflict of that shape; an entry
-- of another shape than its table's is read with the attributes stored
-- here.  A dropped attribute has type 0 and no name.  Kept until the table
-- is dropped.  State, not configuration: not dumped.
CREATE TABLE cosmosrep.conflict_shape (
    relid      oid      NOT NULL,
    shape      bigint   NOT NULL,
    attnames   text[]   NOT NULL,
    atttypes   oid[]    NOT NULL,
    atttypmods int4[]   NOT NULL,
    attlens    int2[]   NOT NULL,
    attbyvals  bool[]   NOT NULL,
    attaligns  "char"[] NOT NULL,
    PRIMARY KEY (relid, shape)
);
REVOKE ALL ON cosmosrep.conflict_shape FROM PUBLIC;
COMMENT ON TABLE cosmosrep.conflict_shape IS
    'the attributes the rows of recorded conflicts were formed with, per table and shape';

--
-- Versions (hybrid logical clock)
--

CREATE FUNCTION cosmosrep.next_version()
RETURNS bigint
AS 'MODULE_PATHNAME', 'cosmosrep_next_version'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.next_version() IS
    'issues a new row version from the clock of this region';
-- PUBLIC may call it: issues a version as any local write does; no data.
GRANT EXECUTE ON FUNCTION cosmosrep.next_version() TO PUBLIC;

CREATE FUNCTION cosmosrep.global_id()
RETURNS bigint
AS 'MODULE_PATHNAME', 'cosmosrep_global_id'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION cosmosrep.global_id() IS
    'a 64-bit id unique across all regions, rising in each (for a key column''s default)';
-- PUBLIC may call it: an id from the clock, no data.
GRANT EXECUTE ON FUNCTION cosmosrep.global_id() TO PUBLIC;

CREATE FUNCTION cosmosrep.current_version()
RETURNS bigint
AS 'MODULE_PATHNAME', 'cosmosrep_current_version'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.current_version() IS
    'the clock of this instance, as a version with region 0 (nothing issued later is smaller)';
-- Executable by PUBLIC, though join_region calls it on every member as
-- the link role: it is a clock reading that every row version a reader can
-- see (_cr_version) already tells, and users read the clock with it.
GRANT EXECUTE ON FUNCTION cosmosrep.current_version() TO PUBLIC;

CREATE FUNCTION cosmosrep.observe_version(version bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_observe_version'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.observe_version(bigint) IS
    'advances the clock past a version seen from another region';
REVOKE ALL ON FUNCTION cosmosrep.observe_version(bigint) FROM PUBLIC;

CREATE FUNCTION cosmosrep.version_region(version bigint)
RETURNS smallint
AS 'MODULE_PATHNAME', 'cosmosrep_version_region'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION cosmosrep.version_region(bigint) IS
    'id of the region that wrote a version';
-- PUBLIC may call it: arithmetic on a version.
GRANT EXECUTE ON FUNCTION cosmosrep.version_region(bigint) TO PUBLIC;

CREATE FUNCTION cosmosrep.version_time(version bigint)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'cosmosrep_version_time'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION cosmosrep.version_time(bigint) IS
    'wall-clock time (millisecond precision) encoded in a version';
-- PUBLIC may call it: arithmetic on a version.
GRANT EXECUTE ON FUNCTION cosmosrep.version_time(bigint) TO PUBLIC;

--
-- Regions
--

CREATE FUNCTION cosmosrep.create_region(region_name text, dsn text)
RETURNS smallint
AS 'MODULE_PATHNAME', 'cosmosrep_create_region'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.create_region(text, text) IS
    'makes this database the first region of a new group';
REVOKE ALL ON FUNCTION cosmosrep.create_region(text, text) FROM PUBLIC;

CREATE FUNCTION cosmosrep.redact_dsn(dsn text)
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_redact_dsn'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION cosmosrep.redact_dsn(text) IS
    'a connection string with its password removed';
-- PUBLIC may call it: removes the password from a string the caller already
-- has.
GRANT EXECUTE ON FUNCTION cosmosrep.redact_dsn(text) TO PUBLIC;

CREATE FUNCTION cosmosrep.arbiter()
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_arbiter'
LANGUAGE C STABLE;
COMMENT ON FUNCTION cosmosrep.arbiter() IS
    'the region that resolves the conflicts of tables under a resolver: the first write region in failover priority order';
-- PUBLIC may call it: it names a region, which cosmosrep.regions shows to
-- PUBLIC too.
GRANT EXECUTE ON FUNCTION cosmosrep.arbiter() TO PUBLIC;

CREATE VIEW cosmosrep.regions AS
    SELECT r.region_id,
           r.region_name,
           r.is_local,
           CASE WHEN pg_catalog.pg_has_role('pg_read_all_settings', 'USAGE')
                THEN r.dsn
                ELSE cosmosrep.redact_dsn(r.dsn)
           END AS dsn,
           r.failover_priority,
           r.accepts_writes,
           r.created_at
      FROM cosmosrep.region r;
COMMENT ON VIEW cosmosrep.regions IS
    'regions of the group; passwords in connection strings are shown to superusers and pg_read_all_settings only';
GRANT SELECT ON cosmosrep.regions TO PUBLIC;

--
-- Multi-region tables
--

CREATE FUNCTION cosmosrep.stamp_row()
RETURNS trigger
AS 'MODULE_PATHNAME', 'cosmosrep_stamp_row'
LANGUAGE C;
COMMENT ON FUNCTION cosmosrep.stamp_row() IS
    'row trigger: stamps version and base version on local writes';
-- PUBLIC may call it: a trigger function: a table's owner creates the
-- trigger (enable_table, or restoring a dump); it refuses to run on a table
-- that is not multi-region.
GRANT EXECUTE ON FUNCTION cosmosrep.stamp_row() TO PUBLIC;

CREATE FUNCTION cosmosrep.stamp_truncate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'cosmosrep_stamp_truncate'
LANGUAGE C;
COMMENT ON FUNCTION cosmosrep.stamp_truncate() IS
    'statement trigger: gives a local TRUNCATE a version and sends it to the other regions';
-- PUBLIC may call it: a trigger function, as stamp_row.
GRANT EXECUTE ON FUNCTION cosmosrep.stamp_truncate() TO PUBLIC;

CREATE FUNCTION cosmosrep.check_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'cosmosrep_check_insert'
LANGUAGE C;
COMMENT ON FUNCTION cosmosrep.check_insert() IS
    'row trigger: refuses an insert that a delete of the same key overtook';
-- PUBLIC may call it: a trigger function, as stamp_row.
GRANT EXECUTE ON FUNCTION cosmosrep.check_insert() TO PUBLIC;

CREATE FUNCTION cosmosrep.enable_table(
    relation regclass,
    policy   text DEFAULT 'last_writer_wins',
    path     name DEFAULT NULL,
    resolver text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_enable_table'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cosmosrep.enable_table(regclass, text, name, text) IS
    'makes a table multi-region with the given conflict policy';
-- PUBLIC may call it: checks that the caller owns the table before anything
-- else.
GRANT EXECUTE ON FUNCTION cosmosrep.enable_table(regclass, text, name, text) TO PUBLIC;

CREATE FUNCTION cosmosrep.alter_table_policy(
    relation regclass,
    policy   text,
    path     name DEFAULT NULL,
    resolver text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_alter_table_policy'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cosmosrep.alter_table_policy(regclass, text, name, text) IS
    'changes the conflict policy of a multi-region table';
-- PUBLIC may call it: checks that the caller owns the table before anything
-- else.
GRANT EXECUTE ON FUNCTION cosmosrep.alter_table_policy(regclass, text, name, text) TO PUBLIC;

CREATE FUNCTION cosmosrep.disable_table(relation regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_disable_table'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.disable_table(regclass) IS
    'makes a multi-region table local again and drops its cosmosrep columns';
-- PUBLIC may call it: checks that the caller owns the table before anything
-- else.
GRANT EXECUTE ON FUNCTION cosmosrep.disable_table(regclass) TO PUBLIC;

-- The resolver a configuration names, as cosmosrep.tables shows it.
CREATE FUNCTION cosmosrep.resolver_procedure(relation regclass, resolver text)
RETURNS regprocedure
AS 'MODULE_PATHNAME', 'cosmosrep_resolver_procedure'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION cosmosrep.resolver_procedure(regclass, text) IS
    'the function a multi-region table''s configuration names as its resolver, NULL if there is none';
-- PUBLIC may call it: behind cosmosrep.tables; it looks up a function.
GRANT EXECUTE ON FUNCTION cosmosrep.resolver_procedure(regclass, text) TO PUBLIC;

CREATE VIEW cosmosrep.tables WITH (security_barrier) AS
    SELECT t.relid AS table_name,
           t.policy,
           t.path,
           cosmosrep.resolver_procedure(t.relid, t.resolver) AS resolver,
           t.enabled_at
      FROM cosmosrep.replicated_table t
     WHERE pg_catalog.has_table_privilege(t.relid, 'SELECT');
COMMENT ON VIEW cosmosrep.tables IS
    'multi-region tables the current user may read, with their conflict policy';
GRANT SELECT ON cosmosrep.tables TO PUBLIC;

--
-- Membership
--

CREATE FUNCTION cosmosrep.join_region(region_name text, dsn text, via text)
RETURNS smallint
AS 'MODULE_PATHNAME', 'cosmosrep_join_region'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cosmosrep.join_region(text, text, text) IS
    'joins this database to the group of the region reached by via, copying the multi-region tables';
REVOKE ALL ON FUNCTION cosmosrep.join_region(text, text, text) FROM PUBLIC;

CREATE FUNCTION cosmosrep.add_region(region_id smallint, region_name text, dsn text)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_add_region'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.add_region(smallint, text, text) IS
    'registers a joining region (called by cosmosrep.join_region)';
REVOKE ALL ON FUNCTION cosmosrep.add_region(smallint, text, text) FROM PUBLIC;

CREATE FUNCTION cosmosrep.forget_region(region_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_forget_region'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.forget_region(text) IS
    'removes a region from this region only, with its slot and origin (called by cosmosrep.remove_region)';
REVOKE ALL ON FUNCTION cosmosrep.forget_region(text) FROM PUBLIC;

CREATE FUNCTION cosmosrep.output_plugin_allowed()
RETURNS boolean
AS 'MODULE_PATHNAME', 'cosmosrep_output_plugin_allowed'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION cosmosrep.output_plugin_allowed() IS
    'whether output_plugin_libraries admits cosmosrep here (asked by cosmosrep.join_region)';
REVOKE ALL ON FUNCTION cosmosrep.output_plugin_allowed() FROM PUBLIC;

-- The link role: the role other regions log in as, named by the user of
-- the connection strings given to create_region and join_region (README,
-- "Security").  It needs LOGIN and REPLICATION (the operator creates it
-- with them) and exactly what this function grants; it is never a
-- superuser.  What each grant is for:
--   region, replicated_table, tombstone, policy_history: a joining region
--     reads the group, its tables, their deletes and configurations here;
--   add_region, forget_region, output_plugin_allowed: join_region and
--     remove_region call them;
--   SELECT on every multi-region table (and USAGE on its schema): the
--     join copies it, an apply worker fetches a row of it.
-- enable_table, and a join or a received enable, grant SELECT on each new
-- multi-region table to every role that may execute add_region (the
-- roles this function was called for).
CREATE FUNCTION cosmosrep.grant_link_role(role regrole)
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
REVOKE ALL ON FUNCTION cosmosrep.grant_link_role(regrole) FROM PUBLIC;

CREATE FUNCTION cosmosrep.remove_region(region_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_remove_region'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.remove_region(text) IS
    'removes a region from the group: from this region and every other one';
REVOKE ALL ON FUNCTION cosmosrep.remove_region(text) FROM PUBLIC;

CREATE FUNCTION cosmosrep.set_failover_priority(region_name text, priority integer)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_set_failover_priority'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.set_failover_priority(text, integer) IS
    'sets the failover priority of a region (1 is tried first), in every region';
REVOKE ALL ON FUNCTION cosmosrep.set_failover_priority(text, integer) FROM PUBLIC;

CREATE FUNCTION cosmosrep.set_multiple_write_regions(enabled boolean,
                                                     write_region text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_set_multiple_write_regions'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cosmosrep.set_multiple_write_regions(boolean, text) IS
    'lets every region write multi-region tables, or only one (this region by default), in every region';
REVOKE ALL ON FUNCTION cosmosrep.set_multiple_write_regions(boolean, text) FROM PUBLIC;

CREATE FUNCTION cosmosrep.last_write_position()
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'cosmosrep_last_write_position'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.last_write_position() IS
    'end of the last commit in this region that wrote multi-region rows (what a strong read elsewhere waits for)';
-- Executable by PUBLIC, though a strong read calls it on the write region
-- as the link role: it returns a WAL position, less than
-- pg_catalog.pg_current_wal_lsn() (executable by PUBLIC) tells anyone, and
-- session tokens carry such positions to clients anyway.
GRANT EXECUTE ON FUNCTION cosmosrep.last_write_position() TO PUBLIC;

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

CREATE FUNCTION cosmosrep.connection_string(preferred_region text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_connection_string'
LANGUAGE C STABLE;
COMMENT ON FUNCTION cosmosrep.connection_string(text) IS
    'a libpq connection string naming every region, ordered by failover priority (the preferred region first), for libpq''s multi-host failover';
-- PUBLIC may call it: hosts, ports and database names of the regions, never
-- credentials.
GRANT EXECUTE ON FUNCTION cosmosrep.connection_string(text) TO PUBLIC;

CREATE FUNCTION cosmosrep.pause_region(region_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_pause_region'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.pause_region(text) IS
    'stops applying the changes of a region here (its slot keeps them)';
REVOKE ALL ON FUNCTION cosmosrep.pause_region(text) FROM PUBLIC;

CREATE FUNCTION cosmosrep.resume_region(region_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_resume_region'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.resume_region(text) IS
    'resumes applying the changes of a paused region';
REVOKE ALL ON FUNCTION cosmosrep.resume_region(text) FROM PUBLIC;

--
-- Consistency
--

CREATE FUNCTION cosmosrep.session_token()
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_session_token'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION cosmosrep.session_token() IS
    'the session token: what this session wrote, to be set as cosmosrep.session_token in another region to read it there';
-- PUBLIC may call it: the caller's own session token.
GRANT EXECUTE ON FUNCTION cosmosrep.session_token() TO PUBLIC;

--
-- Monitoring
--

CREATE FUNCTION cosmosrep.peer_status(
    OUT peer_id integer,
    OUT state text,
    OUT worker_pid integer,
    OUT received_lsn pg_lsn,
    OUT applied_lsn pg_lsn,
    OUT peer_end_lsn pg_lsn,
    OUT last_commit_time timestamptz,
    OUT transactions_applied bigint,
    OUT changes_applied bigint,
    OUT latency_p50_ms double precision,
    OUT latency_p99_ms double precision,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT conflicts bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'cosmosrep_peer_status'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.peer_status() IS
    'what the apply workers of this database report, one row per peer region';
-- PUBLIC may call it: behind cosmosrep.replication_status: positions,
-- counters and latencies; an error's text only for roles with
-- pg_read_all_stats privileges.
GRANT EXECUTE ON FUNCTION cosmosrep.peer_status() TO PUBLIC;

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

CREATE VIEW cosmosrep.replication_status AS
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
GRANT SELECT ON cosmosrep.replication_status TO PUBLIC;

CREATE FUNCTION cosmosrep.conflict_row(entry tid, which text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'cosmosrep_conflict_row_at'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION cosmosrep.conflict_row(tid, text) IS
    'the local, remote or winner row of the conflict entry at ctid entry of cosmosrep.conflict, as jsonb, for a user who may read its table';
-- PUBLIC may call it: behind cosmosrep.conflicts: reads an entry by its
-- ctid, only for callers who may read the table and whom its row-level
-- security does not apply to.
GRANT EXECUTE ON FUNCTION cosmosrep.conflict_row(tid, text) TO PUBLIC;

-- The views that show rows of cosmosrep's tables only for tables the user
-- may read are security barriers: a cheap function of the user's in a
-- WHERE clause sees no row the view's own conditions would hide.  The
-- rows of a conflict (and its key) are shown only where row-level
-- security of its table does not apply to the user (conflict_row).
CREATE VIEW cosmosrep.conflicts WITH (security_barrier) AS
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
COMMENT ON VIEW cosmosrep.conflicts IS
    'conflicts detected in this region, for the tables the current user may read';
GRANT SELECT ON cosmosrep.conflicts TO PUBLIC;

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

CREATE VIEW cosmosrep.conflict_summary WITH (security_barrier) AS
    SELECT table_name, kind, resolution,
           pg_catalog.count(*) AS conflicts,
           pg_catalog.max(detected_at) AS last_detected_at
      FROM cosmosrep.conflicts
     GROUP BY table_name, kind, resolution;
COMMENT ON VIEW cosmosrep.conflict_summary IS
    'conflicts per table, kind and resolution, for the tables the current user may read';
GRANT SELECT ON cosmosrep.conflict_summary TO PUBLIC;

--
-- The conflicts feed (feed.c): entries waiting for the application
--

CREATE VIEW cosmosrep.conflict_feed WITH (security_barrier) AS
    SELECT * FROM cosmosrep.conflicts WHERE resolved_at IS NULL;
COMMENT ON VIEW cosmosrep.conflict_feed IS
    'conflicts waiting for the application: pending (manual policy) and error entries';
GRANT SELECT ON cosmosrep.conflict_feed TO PUBLIC;

--
-- What an operator verifies: write regions, consistency and its bounds,
-- each table's policy, failover priorities
--

CREATE VIEW cosmosrep.verify WITH (security_barrier) AS
    SELECT 1 AS sort, 'multi_region_writes'::text AS item, NULL::text AS name,
           CASE WHEN pg_catalog.bool_and(accepts_writes) THEN 'on' ELSE 'off' END AS value
      FROM cosmosrep.region
    UNION ALL
    SELECT 2, 'write_region', region_name, 'accepts writes'
      FROM cosmosrep.region WHERE accepts_writes
    UNION ALL
    SELECT 3, 'consistency', s.name, pg_catalog.current_setting(s.name)
      FROM (VALUES ('cosmosrep.default_consistency'), ('cosmosrep.max_staleness_prefix'),
                   ('cosmosrep.max_staleness_interval'), ('cosmosrep.session_wait_timeout'),
                   ('synchronous_standby_names')) s(name)
    UNION ALL
    SELECT 4, 'table_policy', t.table_name::text,
           t.policy OPERATOR(pg_catalog.||)
           coalesce(' path ' OPERATOR(pg_catalog.||) t.path::text, '') OPERATOR(pg_catalog.||)
           coalesce(' resolver ' OPERATOR(pg_catalog.||) t.resolver::text, '')
      FROM cosmosrep.tables t
    UNION ALL
    SELECT 5, 'failover_priority', region_name, failover_priority::text
      FROM cosmosrep.region WHERE failover_priority OPERATOR(pg_catalog.>) 0;
COMMENT ON VIEW cosmosrep.verify IS
    'the configuration an operator verifies: write regions, consistency and its bounds, table policies, failover priorities';
GRANT SELECT ON cosmosrep.verify TO PUBLIC;

CREATE FUNCTION cosmosrep.resolve_conflict(conflict_id bigint, keep_version bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_resolve_conflict'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.resolve_conflict(bigint, bigint) IS
    'resolves a feed entry by keeping the row of one of its versions, written anew in every region';
-- PUBLIC may call it: checks the caller's privileges on the table (SELECT,
-- UPDATE, and INSERT or DELETE) before anything else.
GRANT EXECUTE ON FUNCTION cosmosrep.resolve_conflict(bigint, bigint) TO PUBLIC;

CREATE FUNCTION cosmosrep.resolve_conflict_with_row(conflict_id bigint, resolved_row jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_resolve_conflict_with_row'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.resolve_conflict_with_row(bigint, jsonb) IS
    'resolves a feed entry with a row of the same key, written anew in every region';
-- PUBLIC may call it: checks the caller's privileges on the table, as
-- resolve_conflict.
GRANT EXECUTE ON FUNCTION cosmosrep.resolve_conflict_with_row(bigint, jsonb) TO PUBLIC;

CREATE FUNCTION cosmosrep.reapply_conflict(conflict_id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'cosmosrep_reapply_conflict'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.reapply_conflict(bigint) IS
    'applies a feed entry again through the table''s policy as it is now, as a new write';
-- PUBLIC may call it: checks the caller's privileges on the table, as
-- resolve_conflict; the resolver runs as the table's owner.
GRANT EXECUTE ON FUNCTION cosmosrep.reapply_conflict(bigint) TO PUBLIC;

CREATE FUNCTION cosmosrep.discard_conflict(conflict_id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_discard_conflict'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.discard_conflict(bigint) IS
    'resolves a feed entry by accepting what the regions hold';
-- PUBLIC may call it: checks the caller's privileges on the table, as
-- resolve_conflict.
GRANT EXECUTE ON FUNCTION cosmosrep.discard_conflict(bigint) TO PUBLIC;

--
-- Foreign keys between multi-region tables: apply checks none (as core's
-- apply, with session_replication_role = replica), so a parent deleted in
-- one region while a child is inserted in another ends, in every region
-- alike, with the child and without the parent.  This finds such rows.
--

CREATE FUNCTION cosmosrep.dangling_references(child regclass)
RETURNS TABLE (constraint_name name, parent regclass, child_row jsonb)
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fk record;
    cond text;
BEGIN
    FOR fk IN
        SELECT c.conname, c.confrelid::regclass AS parent,
               c.conkey, c.confkey, c.conpfeqop
          FROM pg_catalog.pg_constraint c
         WHERE c.conrelid OPERATOR(pg_catalog.=) child
           AND c.contype OPERATOR(pg_catalog.=) 'f'
         ORDER BY c.conname
    LOOP
        -- the key's own equality operators, named by schema
        SELECT pg_catalog.string_agg(
                   pg_catalog.format('c.%I OPERATOR(%I.%s) p.%I',
                                     ca.attname, n.nspname, o.oprname, pa.attname),
                   ' AND ' ORDER BY k.i)
          INTO cond
          FROM pg_catalog.generate_subscripts(fk.conkey, 1) AS k(i)
          JOIN pg_catalog.pg_attribute ca
            ON ca.attrelid OPERATOR(pg_catalog.=) child
           AND ca.attnum OPERATOR(pg_catalog.=) fk.conkey[k.i]
          JOIN pg_catalog.pg_attribute pa
            ON pa.attrelid OPERATOR(pg_catalog.=) fk.parent
           AND pa.attnum OPERATOR(pg_catalog.=) fk.confkey[k.i]
          JOIN pg_catalog.pg_operator o ON o.oid OPERATOR(pg_catalog.=) fk.conpfeqop[k.i]
          JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace;
        -- a key with a NULL column references nothing (MATCH SIMPLE)
        RETURN QUERY EXECUTE pg_catalog.format(
            'SELECT %L::name, %L::regclass, pg_catalog.to_jsonb(c) FROM %s c'
            ' WHERE %s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)',
            fk.conname, fk.parent, child,
            (SELECT pg_catalog.string_agg(pg_catalog.format('c.%I IS NOT NULL', a.attname), ' AND ')
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) child
                AND a.attnum OPERATOR(pg_catalog.=) ANY (fk.conkey)),
            fk.parent, cond);
    END LOOP;
END
$$;
COMMENT ON FUNCTION cosmosrep.dangling_references(regclass) IS
    'rows of a table whose foreign keys reference no row of the parent (a delete and an insert that crossed between regions)';
-- PUBLIC may call it: it runs as the caller (SECURITY INVOKER), who must
-- read both tables, and names every operator by schema.
GRANT EXECUTE ON FUNCTION cosmosrep.dangling_references(regclass) TO PUBLIC;

--
-- Schema changes of multi-region tables (ddl.c)
--

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

--
-- Keeping the configuration true when objects are dropped
--

-- Both event trigger functions run as the extension's owner (a superuser),
-- with a pinned search_path: any user may drop or alter their own tables,
-- and the functions read and write cosmosrep's configuration for them.
CREATE FUNCTION cosmosrep.on_sql_drop()
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
COMMENT ON FUNCTION cosmosrep.on_sql_drop() IS
    'event trigger: forgets dropped multi-region tables, protects resolvers in use';
-- PUBLIC may call it: an event trigger function (SECURITY DEFINER, pinned
-- search_path) that every role's DROP fires.
GRANT EXECUTE ON FUNCTION cosmosrep.on_sql_drop() TO PUBLIC;
CREATE EVENT TRIGGER cosmosrep_sql_drop ON sql_drop
    EXECUTE FUNCTION cosmosrep.on_sql_drop();

CREATE FUNCTION cosmosrep.check_table(relation oid)
RETURNS void
AS 'MODULE_PATHNAME', 'cosmosrep_check_table'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cosmosrep.check_table(oid) IS
    'refuses a table definition that no longer fits its multi-region configuration';
-- PUBLIC may call it: what cosmosrep.on_ddl_command_end calls for every
-- role's ALTER TABLE; reads only the table's definition and cosmosrep's
-- configuration, with a pinned search_path.
GRANT EXECUTE ON FUNCTION cosmosrep.check_table(oid) TO PUBLIC;

CREATE FUNCTION cosmosrep.on_ddl_command_end()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
BEGIN
    FOR cmd IN SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
                WHERE classid = 'pg_catalog.pg_class'::regclass LOOP
        PERFORM cosmosrep.check_table(cmd.objid);
    END LOOP;
END
$$;
COMMENT ON FUNCTION cosmosrep.on_ddl_command_end() IS
    'event trigger: keeps multi-region tables consistent with their declared policy';
-- PUBLIC may call it: an event trigger function (SECURITY DEFINER, pinned
-- search_path) that every role's ALTER TABLE fires.
GRANT EXECUTE ON FUNCTION cosmosrep.on_ddl_command_end() TO PUBLIC;
CREATE EVENT TRIGGER cosmosrep_ddl_command_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'DROP INDEX', 'ALTER INDEX')
    EXECUTE FUNCTION cosmosrep.on_ddl_command_end();

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
