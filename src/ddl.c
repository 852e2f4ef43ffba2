/*-------------------------------------------------------------------------
 *
 * ddl.c
 *	  Schema changes of multi-region tables: captured where they are made,
 *	  replayed in the other regions at their place in the stream.
 *
 * NOTES
 *	  Capture is a ProcessUtility hook, not an event trigger: the hook is
 *	  given each statement's own text (its location and length in the
 *	  query string), so a query string of several statements, or a
 *	  function that runs DDL, sends exactly the statement that changed
 *	  the table and nothing that came with it.  Before a statement that
 *	  can change a table's definition runs (ALTER TABLE, ALTER INDEX,
 *	  RENAME, SET SCHEMA, CREATE INDEX, DROP INDEX), the hook resolves the
 *	  table it names as the statement will; if that table is multi-region,
 *	  cosmosrep.ddl_replication decides: replicate (the default) writes a
 *	  signed transactional message (CR_STATEMENT_MESSAGE_PREFIX) after the
 *	  statement succeeds, with the statement's text, the search_path and
 *	  role it ran with, and the table's name and owner as they were before
 *	  it; warn runs it here only, with a WARNING; refuse refuses it, and
 *	  cosmosrep.replicate_ddl(statement) is then the way.  The message is
 *	  written in the statement's transaction after the statement, so it
 *	  travels between the rows written before and after it.
 *
 *	  CREATE TABLE ... PARTITION OF, ATTACH and DETACH PARTITION are
 *	  captured as changes of the parent they name (the table at the top
 *	  of its tree decides whether it is multi-region).  They change where
 *	  a region keeps rows, never which rows the table holds: attaching a
 *	  table with rows and detaching a partition with rows are refused, a
 *	  replayed detach sends the rows still in the partition here through
 *	  the parent into its other partitions, and TRUNCATE or DROP TABLE of
 *	  a partition alone is refused (docs/design.md, "Partitioned
 *	  tables").
 *
 *	  Replay (cr_ddl_apply_statement) parses the text again and accepts
 *	  exactly one statement of the kinds above that names the same table;
 *	  it runs as the local table's owner (who must have the sending
 *	  region's owner's name), with SECURITY_RESTRICTED_OPERATION and the
 *	  captured search_path, never as a superuser: the statement can do
 *	  no more here than its table's owner can.  An apply worker's own
 *	  statements are not captured (and would carry its replication origin,
 *	  which the output plugin filters anyway).
 *
 *	  Before a captured statement runs, the table is fenced in every
 *	  other region (ddl_fence.c; statement_stops_writes says whether its
 *	  writes stop too).
 *
 *	  cosmosrep.ddl_column and cosmosrep.ddl_table (ddl_names.c) remember
 *	  every name each column and each table had before and after each
 *	  replicated statement, here and where it is replayed: apply's relation map
 *	  (apply_relation.c) reads them to map a peer's row of the old shape
 *	  that arrives after the change (a table renamed here is found by its
 *	  old name, a column renamed here matches its old name there, a
 *	  column dropped here is ignored, a column added here takes the value
 *	  the rows that existed when it was added have).
 *
 * IDENTIFICATION
 *	  src/ddl.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parser.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "ddl.h"
#include "ddl_names.h"
#include "ddl_fence.h"
#include "names.h"
#include "protocol.h"
#include "run_as.h"
#include "shmem.h"
#include "signing.h"

PG_FUNCTION_INFO_V1(cosmosrep_replicate_ddl);

typedef enum CrDdlReplication
{
	CR_DDL_REPLICATE,
	CR_DDL_WARN,
	CR_DDL_REFUSE
} CrDdlReplication;

static const struct config_enum_entry ddl_replication_options[] = {
	{"replicate", CR_DDL_REPLICATE, false},
	{"warn", CR_DDL_WARN, false},
	{"refuse", CR_DDL_REFUSE, false},
	{NULL, 0, false}
};

static int	cr_ddl_replication = CR_DDL_REPLICATE;

/* what a statement captured before it runs sends after it ran */
typedef struct CrCapture
{
	Oid			relid;
	char	   *nspname;
	char	   *relname;
	char	   *owner;
	char	   *role;
	char	   *search_path;
	char	   *text;
	int			natts;			/* attributes before the statement */
	Node	   *stmt;			/* the statement, as it ran */
	bool		partition;		/* it adds, attaches or detaches a partition */
	CrFence    *fence;			/* the other regions stopped writing it */
} CrCapture;

static ProcessUtility_hook_type prev_process_utility = NULL;
static int	capture_depth = 0;	/* captured statements running */
static bool replaying = false;	/* apply runs a peer's statement */
static bool forced = false;		/* cosmosrep.replicate_ddl runs one */


static void ddl_process_utility(PlannedStmt *pstmt, const char *queryString,
								bool readOnlyTree, ProcessUtilityContext context,
								ParamListInfo params, QueryEnvironment *queryEnv,
								DestReceiver *dest, QueryCompletion *qc);
/* what statement_table says besides the table */
#define STMT_CONCURRENTLY	0x01	/* CREATE or DROP INDEX CONCURRENTLY */
#define STMT_OTHER_TABLES	0x02	/* a DROP INDEX of several tables */
#define STMT_OWNER			0x04	/* an ALTER TABLE that also changes the owner */
#define STMT_PARTITION		0x08	/* CREATE TABLE ... PARTITION OF, ATTACH or
									 * DETACH PARTITION: the table returned is
									 * the parent, maybe a partition itself */

static Oid	statement_table(Node *stmt, const char **what, int *flags);
static bool is_multi_region(Oid relid);
static Oid	multi_region_table(Oid relid, int flags);
static AlterTableCmd *partition_command(Node *stmt);
static void check_partition_removal(Node *stmt);
static void check_partition_rows(Node *stmt, const char *origin_region);
static void reroute_detached_rows(Node *stmt, Oid parent);
static bool capture_start(PlannedStmt *pstmt, const char *queryString,
						  CrCapture *capture);
static void capture_end(CrCapture *capture);
static void check_added_columns(CrCapture *capture);
static void replay_error_context(void *arg);

void
cr_ddl_define_settings(void)
{
	DefineCustomEnumVariable("cosmosrep.ddl_replication",
							 "What a schema change of a multi-region table made outside cosmosrep.replicate_ddl does.",
							 "replicate (send it to every region at its place in the stream), warn (run it here only, with a warning), or refuse.",
							 &cr_ddl_replication,
							 CR_DDL_REPLICATE, ddl_replication_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}

/* called from _PG_init when the library is preloaded */
void
cr_ddl_install_hooks(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = ddl_process_utility;
}

/* ----------------------------------------------------------------
 * Capture
 * ----------------------------------------------------------------
 */

/* the table of index indexid, or InvalidOid */
static Oid
index_table(Oid indexid)
{
	if (!OidIsValid(indexid) || get_rel_relkind(indexid) != RELKIND_INDEX)
		return InvalidOid;
	return IndexGetRelation(indexid, true);
}

static Oid
range_table(RangeVar *rv)
{
	return rv ? RangeVarGetRelid(rv, NoLock, true) : InvalidOid;
}

/*
 * The table whose definition stmt changes, resolved (without a lock) as
 * the statement will resolve it, or InvalidOid when stmt is not one of
 * the statements cosmosrep replicates.  *what names the statement for
 * messages; *flags says what cannot be replicated (STMT_*).  An ALTER
 * TABLE that only changes the owner is not a change of shape: it is left
 * to each region (owners must have the same name everywhere).
 */
static Oid
statement_table(Node *stmt, const char **what, int *flags)
{
	Oid			relid = InvalidOid;
	ListCell   *lc;

	*flags = 0;
	*what = "";
	switch (nodeTag(stmt))
	{
		case T_AlterTableStmt:
			{
				AlterTableStmt *s = (AlterTableStmt *) stmt;
				AlterTableCmd *partcmd = partition_command(stmt);
				int			owner_cmds = 0;

				/*
				 * ATTACH and DETACH PARTITION travel like the rest, as a
				 * change of the parent (the table at the top of the tree
				 * decides whether it is multi-region): README,
				 * "Partitioned tables".  The grammar gives them a
				 * statement of their own.  ALTER INDEX ... ATTACH
				 * PARTITION stays local, as before.
				 */
				if (partcmd != NULL)
				{
					if (s->objtype != OBJECT_TABLE)
						return InvalidOid;
					*flags |= STMT_PARTITION;
					if (partcmd->subtype == AT_AttachPartition)
						*what = "ATTACH PARTITION";
					else
					{
						*what = "DETACH PARTITION";
						if (partcmd->subtype == AT_DetachPartitionFinalize ||
							((PartitionCmd *) partcmd->def)->concurrent)
							*flags |= STMT_CONCURRENTLY;
					}
					return range_table(s->relation);
				}
				foreach(lc, s->cmds)
				{
					if (((AlterTableCmd *) lfirst(lc))->subtype == AT_ChangeOwner)
						owner_cmds++;
				}
				if (owner_cmds == list_length(s->cmds))
					return InvalidOid;
				if (owner_cmds > 0)
					*flags |= STMT_OWNER;
				*what = s->objtype == OBJECT_INDEX ? "ALTER INDEX" : "ALTER TABLE";
				if (s->objtype == OBJECT_TABLE)
					relid = range_table(s->relation);
				else if (s->objtype == OBJECT_INDEX)
					relid = index_table(range_table(s->relation));
				break;
			}
		case T_CreateStmt:
			{
				CreateStmt *s = (CreateStmt *) stmt;

				/* a new partition of a table; other tables stay local */
				if (s->partbound == NULL || list_length(s->inhRelations) != 1)
					return InvalidOid;
				*what = "CREATE TABLE PARTITION";
				*flags |= STMT_PARTITION;
				relid = range_table(linitial(s->inhRelations));
				break;
			}
		case T_RenameStmt:
			{
				RenameStmt *s = (RenameStmt *) stmt;

				*what = "RENAME";
				if (s->renameType == OBJECT_TABLE || s->renameType == OBJECT_TABCONSTRAINT ||
					(s->renameType == OBJECT_COLUMN && s->relationType == OBJECT_TABLE))
					relid = range_table(s->relation);
				else if (s->renameType == OBJECT_INDEX)
					relid = index_table(range_table(s->relation));
				break;
			}
		case T_AlterObjectSchemaStmt:
			{
				AlterObjectSchemaStmt *s = (AlterObjectSchemaStmt *) stmt;

				*what = "SET SCHEMA";
				if (s->objectType == OBJECT_TABLE)
					relid = range_table(s->relation);
				break;
			}
		case T_IndexStmt:
			{
				IndexStmt  *s = (IndexStmt *) stmt;

				*what = "CREATE INDEX";
				if (s->concurrent)
					*flags |= STMT_CONCURRENTLY;
				relid = range_table(s->relation);
				break;
			}
		case T_DropStmt:
			{
				DropStmt   *s = (DropStmt *) stmt;

				if (s->removeType != OBJECT_INDEX)
					return InvalidOid;
				*what = "DROP INDEX";
				if (s->concurrent)
					*flags |= STMT_CONCURRENTLY;
				foreach(lc, s->objects)
				{
					Oid			table = index_table(range_table(makeRangeVarFromNameList(lfirst(lc))));

					if (!OidIsValid(relid))
						relid = table;
					else if (table != relid)
						*flags |= STMT_OTHER_TABLES;
				}
				break;
			}
		default:
			break;
	}
	return relid;
}

/* whether the partitioned table rv names has a default partition */
static bool
has_default_partition(RangeVar *rv)
{
	Oid			relid = RangeVarGetRelid(rv, NoLock, true);

	return OidIsValid(relid) && get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE &&
		OidIsValid(get_default_partition_oid(relid));
}

/*
 * Whether a captured statement checks or converts values (a type, a
 * constraint, a unique index, NOT NULL, a column added with a constraint):
 * it could then fail on rows another region wrote meanwhile, or make
 * them fail where they arrive, so it stops the other regions' writes
 * while it travels (ddl_fence.c).  Adding, dropping and renaming columns,
 * dropping constraints, defaults and indexes, other indexes and storage
 * settings commute with concurrent writes: rows of the old shape are
 * mapped by name where they arrive.
 */
static bool
statement_stops_writes(Node *stmt)
{
	ListCell   *lc;

	/*
	 * A partition created or attached takes rows of its bound that the
	 * parent's default partition must not hold; a partition detached with
	 * no default partition beside it leaves rows that another region wrote
	 * into it meanwhile nowhere to go (ddl.c's reroute).
	 */
	if (IsA(stmt, CreateStmt))
		return ((CreateStmt *) stmt)->partbound != NULL &&
			has_default_partition(linitial(((CreateStmt *) stmt)->inhRelations));
	if (IsA(stmt, IndexStmt))
		return ((IndexStmt *) stmt)->unique || ((IndexStmt *) stmt)->excludeOpNames != NIL;
	if (!IsA(stmt, AlterTableStmt))
		return false;
	foreach(lc, ((AlterTableStmt *) stmt)->cmds)
	{
		AlterTableCmd *cmd = lfirst(lc);
		ListCell   *c;

		switch (cmd->subtype)
		{
			case AT_AttachPartition:
				if (has_default_partition(((AlterTableStmt *) stmt)->relation))
					return true;
				break;
			case AT_DetachPartition:
				if (!has_default_partition(((AlterTableStmt *) stmt)->relation))
					return true;
				break;
			case AT_AddColumn:
				foreach(c, ((ColumnDef *) cmd->def)->constraints)
				{
					ConstrType	type = ((Constraint *) lfirst(c))->contype;

					if (type != CONSTR_NULL && type != CONSTR_DEFAULT)
						return true;
				}
				break;
			case AT_DropColumn:
			case AT_DropConstraint:
			case AT_DropNotNull:
			case AT_ColumnDefault:
			case AT_SetStatistics:
			case AT_SetStorage:
			case AT_SetRelOptions:
			case AT_ResetRelOptions:
			case AT_ClusterOn:
			case AT_DropCluster:
				break;
			default:
				return true;
		}
	}
	return false;
}

/*
 * The number of attributes and the owner of relid, read from the catalog
 * cache: before the statement runs, the table is not locked yet.
 */
static void
relation_natts_owner(Oid relid, int *natts, Oid *owner)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	*natts = ((Form_pg_class) GETSTRUCT(tuple))->relnatts;
	*owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
}

/* whether the current user owns relid (or is a superuser) */
static bool
is_table_owner(Oid relid)
{
#if PG_VERSION_NUM >= 160000
	return object_ownercheck(RelationRelationId, relid, GetUserId());
#else
	return pg_class_ownercheck(relid, GetUserId());
#endif
}

/* whether relid is a multi-region table of this database's group */
static bool
is_multi_region(Oid relid)
{
	Oid			nspid;

	/* not while an extension script runs, nor before cosmosrep is created */
	if (!OidIsValid(relid) || creating_extension)
		return false;
	nspid = get_namespace_oid(COSMOSREP_SCHEMA, true);
	if (!OidIsValid(nspid) || !OidIsValid(get_relname_relid("replicated_table", nspid)))
		return false;
	return cr_get_table_config(relid) != NULL;
}

/*
 * The multi-region table whose definition a statement of statement_table
 * with flags changes, relid being the table it returned, or InvalidOid:
 * a partition statement changes the table at the top of the parent's
 * tree (relid may be a sub-partitioned partition).
 */
static Oid
multi_region_table(Oid relid, int flags)
{
	if (OidIsValid(relid) && (flags & STMT_PARTITION))
		relid = cr_partition_root(relid);
	return is_multi_region(relid) ? relid : InvalidOid;
}

/* the ATTACH or DETACH PARTITION subcommand of stmt, or NULL */
static AlterTableCmd *
partition_command(Node *stmt)
{
	ListCell   *lc;

	if (!IsA(stmt, AlterTableStmt))
		return NULL;
	foreach(lc, ((AlterTableStmt *) stmt)->cmds)
	{
		AlterTableCmd *cmd = lfirst(lc);

		if (cmd->subtype == AT_AttachPartition || cmd->subtype == AT_DetachPartition ||
			cmd->subtype == AT_DetachPartitionFinalize)
			return cmd;
	}
	return NULL;
}

/*
 * Every utility statement: a change of a multi-region table's definition
 * is captured (capture_start before it runs, capture_end after it ran);
 * statements it runs in turn (a default's function, an index expression)
 * are part of it and not captured again.
 */
static void
ddl_process_utility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	CrCapture	capture;
	bool		captured = false;

	if (!replaying && capture_depth == 0 && context != PROCESS_UTILITY_SUBCOMMAND &&
		IsTransactionState())
	{
		check_partition_removal(pstmt->utilityStmt);
		captured = capture_start(pstmt, queryString, &capture);
	}

	if (captured)
		capture_depth++;
	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		if (captured)
		{
			capture_depth--;
			cr_fence_end(capture.fence, true);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (!captured)
		return;
	capture_depth--;
	PG_TRY();
	{
		capture_end(&capture);
	}
	PG_CATCH();
	{
		cr_fence_end(capture.fence, true);
		PG_RE_THROW();
	}
	PG_END_TRY();
	cr_fence_end(capture.fence, false);
}

/*
 * Before a statement runs: if it changes a multi-region table, apply
 * cosmosrep.ddl_replication (refuse, warn, or go on) and remember what
 * its message needs; returns whether it is to be sent.
 */
static bool
capture_start(PlannedStmt *pstmt, const char *queryString, CrCapture *capture)
{
	Node	   *stmt = pstmt->utilityStmt;
	const char *what;
	int			flags;
	Oid			relid = statement_table(stmt, &what, &flags);
	Oid			table = multi_region_table(relid, flags);
	Oid			owner;
	int			mode = forced ? CR_DDL_REPLICATE : cr_ddl_replication;
	int			location = pstmt->stmt_location;
	int			length = pstmt->stmt_len;
	List	   *parsed;

	if (!OidIsValid(table))
		return false;
	if (mode == CR_DDL_REFUSE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s of multi-region table \"%s\" must go through cosmosrep.replicate_ddl",
						what, get_rel_name(table)),
				 errdetail("cosmosrep.ddl_replication is \"refuse\"."),
				 errhint("Run the statement with SELECT cosmosrep.replicate_ddl('...'), which applies it in every region.")));
	if (mode == CR_DDL_WARN)
	{
		ereport(WARNING,
				(errmsg("%s of multi-region table \"%s\" is not replicated",
						what, get_rel_name(table)),
				 errdetail("cosmosrep.ddl_replication is \"warn\"."),
				 errhint("Make the same change in every region before rows of the new shape reach them, or use cosmosrep.replicate_ddl.")));
		return false;
	}
	if (flags & STMT_OWNER)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("OWNER TO cannot be combined with other changes of multi-region table \"%s\"",
						get_rel_name(relid)),
				 errhint("Change the owner in a statement of its own, in every region.")));
	if (flags & STMT_OTHER_TABLES)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s changes multi-region table \"%s\" and another table",
						what, get_rel_name(table)),
				 errhint("Change each table in a statement of its own.")));
	if (flags & STMT_CONCURRENTLY)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s CONCURRENTLY of multi-region table \"%s\" cannot be replicated",
						what, get_rel_name(table)),
				 errhint("Leave out CONCURRENTLY.")));

	/* the statement's own text, which must parse again as this statement */
	if (queryString == NULL)
		location = length = -1;
	else
	{
		if (location < 0)
			location = 0;
		if (length <= 0)
			length = strlen(queryString + location);
	}
	capture->text = location < 0 ? NULL : pnstrdup(queryString + location, length);
	parsed = capture->text ? raw_parser(capture->text, RAW_PARSE_DEFAULT) : NIL;
	if (list_length(parsed) != 1 ||
		nodeTag(((RawStmt *) linitial(parsed))->stmt) != nodeTag(stmt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s of multi-region table \"%s\" cannot be replicated: its text is not known",
						what, get_rel_name(table)),
				 errhint("Run it with cosmosrep.replicate_ddl.")));

	capture->relid = relid;
	capture->nspname = get_namespace_name(get_rel_namespace(relid));
	capture->relname = get_rel_name(relid);
	relation_natts_owner(relid, &capture->natts, &owner);
	capture->owner = GetUserNameFromId(owner, false);
	capture->role = GetUserNameFromId(GetUserId(), false);
	capture->search_path = pstrdup(namespace_search_path);
	capture->stmt = stmt;
	capture->partition = (flags & STMT_PARTITION) != 0;
	if (!capture->partition)
		cr_ddl_record_names(relid);

	/*
	 * Stop the other regions' writes of the table and apply what they
	 * wrote (ddl_fence.c).  Only for its owner: anyone else's statement
	 * fails on its privileges before it changes anything, and must not
	 * stop the writes of a table in every region first.
	 */
	if (!is_table_owner(relid))
		capture->fence = NULL;
	else
	{
		Oid			root = cr_partition_root(relid);

		capture->fence = cr_fence_peers(root, get_namespace_name(get_rel_namespace(root)),
										get_rel_name(root), statement_stops_writes(stmt));
	}
	return true;
}

/*
 * A column the statement added whose rows would get a value per region:
 * a volatile default or an identity is evaluated for each existing row
 * by each region's own ALTER TABLE (PostgreSQL stores no single value
 * for such rows, as it does for a non-volatile default), and a row of
 * the old shape arriving later would get NULL.  Refused, with the way
 * that converges.
 */
static void
check_added_columns(CrCapture *capture)
{
	Relation	rel = relation_open(capture->relid, NoLock);
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = capture->natts; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated)
			continue;
		if (att->attidentity || (att->atthasdef && !att->atthasmissing))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("column \"%s\" added to multi-region table \"%s\" would have different values in each region",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errdetail("Its default is volatile or an identity, evaluated for the existing rows in each region."),
					 errhint("Add the column without a default, then set the default and fill the existing rows with UPDATE.")));
	}
	relation_close(rel, NoLock);
}

/*
 * A TRUNCATE or DROP TABLE naming a partition of a multi-region table (at
 * any depth, not the table itself) would remove rows from the table in
 * this region only: no trigger of cosmosrep fires for it, and nothing
 * would tell the other regions.  It is refused, unless
 * cosmosrep.ddl_replication is warn, which runs it here with a warning as
 * it runs other changes here only.  The ways that keep every region alike
 * are a truncate of the partitioned table (replicated), DELETE (rows) and
 * DETACH PARTITION (the partition), which every region applies.
 */
static void
check_partition_removal(Node *stmt)
{
	List	   *rangevars = NIL;
	bool		truncate = IsA(stmt, TruncateStmt);
	ListCell   *lc;

	if (truncate)
		rangevars = ((TruncateStmt *) stmt)->relations;
	else if (IsA(stmt, DropStmt) && ((DropStmt *) stmt)->removeType == OBJECT_TABLE)
	{
		foreach(lc, ((DropStmt *) stmt)->objects)
			rangevars = lappend(rangevars, makeRangeVarFromNameList(lfirst(lc)));
	}
	foreach(lc, rangevars)
	{
		Oid			relid = range_table(lfirst(lc));
		Oid			root;

		if (!OidIsValid(relid) || !get_rel_relispartition(relid))
			continue;
		root = cr_partition_root(relid);
		if (!is_multi_region(root))
			continue;
		if (cr_ddl_replication == CR_DDL_WARN)
		{
			ereport(WARNING,
					(errmsg("%s of partition \"%s\" of multi-region table \"%s\" is not replicated",
							truncate ? "TRUNCATE" : "DROP TABLE",
							get_rel_name(relid), get_rel_name(root)),
					 errdetail("cosmosrep.ddl_replication is \"warn\": its rows are removed in this region only.")));
			continue;
		}
		if (truncate)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("partition \"%s\" of multi-region table \"%s\" cannot be truncated alone",
							get_rel_name(relid), get_rel_name(root)),
					 errdetail("Its rows would be removed in this region only: only a truncate of the partitioned table is replicated."),
					 errhint("Truncate the partitioned table, or delete the partition's rows with DELETE, which every region applies.")));
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("partition \"%s\" of multi-region table \"%s\" cannot be dropped",
						get_rel_name(relid), get_rel_name(root)),
				 errdetail("Its rows would be removed in this region only."),
				 errhint("Detach the partition first (ALTER TABLE ... DETACH PARTITION, which every region applies), then drop it.")));
	}
}

/*
 * After an ATTACH or DETACH PARTITION ran, here (origin_region NULL) or
 * replayed from origin_region, with the statement's locks held: a
 * partition statement changes where rows are kept, never which rows the
 * multi-region table holds, so that every region that applies it keeps
 * the same rows whatever its layout.  An attached table holding rows is
 * refused (its rows would enter the table in one region only; here and
 * where it is replayed), and so is a table whose columns are not at the
 * table's positions; a partition detached here must hold no rows (they
 * would leave the table in this region only).  Where a detach is
 * replayed, rows its partition still holds stay in the table
 * (reroute_detached_rows).  CREATE TABLE ... PARTITION OF makes an empty
 * partition with the table's layout: nothing to check.
 */
static void
check_partition_rows(Node *stmt, const char *origin_region)
{
	AlterTableCmd *cmd = partition_command(stmt);
	Relation	part;
	Oid			root;

	if (cmd == NULL)
		return;
	part = table_openrv(((PartitionCmd *) cmd->def)->name, NoLock);
	root = cr_partition_root(range_table(((AlterTableStmt *) stmt)->relation));
	if (cmd->subtype == AT_AttachPartition)
	{
		Relation	rootrel = table_open(root, NoLock);

		cr_check_partition_layouts(rootrel, true);
		table_close(rootrel, NoLock);
		if (cr_table_has_rows(part) && origin_region == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s\" attached to multi-region table \"%s\" holds rows",
							RelationGetRelationName(part), get_rel_name(root)),
					 errdetail("Its rows would enter the multi-region table in this region only."),
					 errhint("Attach an empty table, then insert the rows through the partitioned table, which sends them to every region.")));
		if (cr_table_has_rows(part))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s\" attached to multi-region table \"%s\" in region \"%s\" holds rows in this region",
							RelationGetRelationName(part), get_rel_name(root), origin_region),
					 errdetail("Its rows would enter the multi-region table in this region only."),
					 errhint("Empty the table here; replication from \"%s\" resumes then.",
							 origin_region)));
	}
	else if (origin_region == NULL && cr_table_has_rows(part))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("partition \"%s\" of multi-region table \"%s\" holds rows",
						RelationGetRelationName(part), get_rel_name(root)),
				 errdetail("Detaching it would remove its rows from the multi-region table in this region only."),
				 errhint("Delete its rows with DELETE, which every region applies, then detach it.")));
	table_close(part, NoLock);
}

/*
 * After the statement ran: remember the columns' new names and write the
 * message that repeats the statement in the other regions.
 */
static void
capture_end(CrCapture *capture)
{
	StringInfoData buf;
	const char *fields[6];

	if (capture->partition)
	{
		check_partition_rows(capture->stmt, NULL);

		/*
		 * CREATE TABLE IF NOT EXISTS that found a table of that name which
		 * is no partition of the parent changed nothing: it sends nothing,
		 * or other regions would make a partition this one does not have.
		 */
		if (IsA(capture->stmt, CreateStmt) && ((CreateStmt *) capture->stmt)->if_not_exists)
		{
			Oid			made = range_table(((CreateStmt *) capture->stmt)->relation);

			if (!OidIsValid(made) || !get_rel_relispartition(made) ||
				get_partition_parent(made, true) != capture->relid)
				return;
		}
	}
	else
	{
		check_added_columns(capture);
		cr_ddl_record_names(capture->relid);
	}
	if (!XLogLogicalInfoActive())
		return;
	fields[0] = capture->nspname;
	fields[1] = capture->relname;
	fields[2] = capture->owner;
	fields[3] = capture->role;
	fields[4] = capture->search_path;
	fields[5] = capture->text;
	initStringInfo(&buf);
	cr_append_fields(&buf, fields, lengthof(fields));
	cr_log_message(CR_STATEMENT_MESSAGE_PREFIX, buf.data, buf.len, true);
	pfree(buf.data);
}

/*
 * cosmosrep.replicate_ddl(statement): run exactly one statement that
 * changes a multi-region table, as the caller, and replicate it whatever
 * cosmosrep.ddl_replication says.
 */
Datum
cosmosrep_replicate_ddl(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	List	   *parsed = raw_parser(sql, RAW_PARSE_DEFAULT);
	const char *what;
	int			flags;
	Oid			relid;
	int			rc;

	/* without the hook, nothing would be captured */
	cr_require_preload();
	if (list_length(parsed) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cosmosrep.replicate_ddl runs exactly one statement"),
				 errdetail("The string holds %d statements.", list_length(parsed))));
	relid = statement_table(((RawStmt *) linitial(parsed))->stmt, &what, &flags);
	if (!OidIsValid(multi_region_table(relid, flags)))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cosmosrep.replicate_ddl replicates only a statement that changes a multi-region table"),
				 errhint("It takes ALTER TABLE, ALTER INDEX, RENAME, SET SCHEMA, CREATE INDEX, DROP INDEX, CREATE TABLE ... PARTITION OF, ATTACH PARTITION and DETACH PARTITION of a multi-region table.")));

	forced = true;
	PG_TRY();
	{
		SPI_connect();
		rc = SPI_execute(sql, false, 0);
		if (rc < 0)
			elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(rc));
		SPI_finish();
	}
	PG_FINALLY();
	{
		forced = false;
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------
 * Replay
 * ----------------------------------------------------------------
 */

typedef struct ReplayContext
{
	const char *text;
	const char *role;
	const char *origin_region;
} ReplayContext;

static void
replay_error_context(void *arg)
{
	ReplayContext *r = arg;

	errcontext("statement of role \"%s\" replicated from region \"%s\": %s",
			   r->role, r->origin_region, r->text);
}

/*
 * After a DETACH PARTITION replayed from another region, as the table's
 * owner: the rows the detached table still holds here are rows the
 * origin did not hold when it detached (it detaches only an empty
 * partition): written here or in a third region concurrently.  At the
 * origin they arrive after the detach and go into what its layout has
 * left; here they go the same way, through parent (the table the
 * statement detached from) into its remaining partitions, with their
 * stamps (the row trigger does not fire in apply), and leave the detached
 * table.  If no partition takes one, the statement fails with
 * PostgreSQL's "no partition of relation ... found for row" and
 * replication from the origin waits until one does.
 */
static void
reroute_detached_rows(Node *stmt, Oid parent)
{
	AlterTableCmd *cmd = partition_command(stmt);
	Relation	part = table_openrv(((PartitionCmd *) cmd->def)->name, NoLock);
	Relation	parentrel;
	TupleDesc	desc;
	StringInfoData columns;
	char	   *partname;
	char	   *parentname;
	int			rc;

	if (!cr_table_has_rows(part))
	{
		table_close(part, NoLock);
		return;
	}
	parentrel = table_open(parent, NoLock);
	desc = RelationGetDescr(parentrel);
	initStringInfo(&columns);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated)
			continue;
		appendStringInfo(&columns, "%s%s", columns.len > 0 ? ", " : "",
						 quote_identifier(NameStr(att->attname)));
	}
	partname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(part)),
										  RelationGetRelationName(part));
	parentname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(parentrel)),
											RelationGetRelationName(parentrel));
	table_close(parentrel, NoLock);
	table_close(part, NoLock);

	SPI_connect();
	rc = SPI_execute(psprintf("INSERT INTO %s (%s) SELECT %s FROM %s",
							  parentname, columns.data, columns.data, partname),
					 false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not move the rows of \"%s\": %s", partname,
			 SPI_result_code_string(rc));
	rc = SPI_execute(psprintf("DELETE FROM %s", partname), false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not move the rows of \"%s\": %s", partname,
			 SPI_result_code_string(rc));
	SPI_finish();
}

/*
 * A statement that changed a multi-region table in another region, run
 * here at its place in the stream (inside the apply transaction, with a
 * snapshot, the tables of apply closed).  The content comes from a peer
 * and is checked first: one statement of the replicated kinds, naming
 * the table the message names, which must be multi-region here and owned
 * by a role of the same name.  It runs as that owner, restricted, with
 * the captured search_path, and is not captured again.
 */
void
cr_ddl_apply_statement(const char *content, Size size, const char *origin_region)
{
	const char *end = content + size;
	const char *cursor = content;
	const char *nspname = cr_message_name_field(&cursor, end, "cosmosrep statement");
	const char *relname = cr_message_name_field(&cursor, end, "cosmosrep statement");
	const char *owner = cr_message_name_field(&cursor, end, "cosmosrep statement");
	const char *role = cr_message_name_field(&cursor, end, "cosmosrep statement");
	const char *search_path = cr_message_field(&cursor, end, "cosmosrep statement");
	const char *text = cr_message_field(&cursor, end, "cosmosrep statement");
	List	   *parsed;
	Node	   *stmt;
	const char *what;
	int			flags;
	Oid			relid;
	bool		partition;
	Oid			local_owner_id;
	CrUserContext user;
	ReplayContext rcontext = {text, role, origin_region};
	CrRegion   *region;
	ErrorContextCallback errcallback;
	int			rc;

	cr_message_end(cursor, end, "cosmosrep statement");
	parsed = raw_parser(text, RAW_PARSE_DEFAULT);
	if (list_length(parsed) != 1)
		cr_message_malformed("cosmosrep statement", "It does not hold exactly one statement.");
	stmt = ((RawStmt *) linitial(parsed))->stmt;
	partition = partition_command(stmt) != NULL ||
		(IsA(stmt, CreateStmt) && ((CreateStmt *) stmt)->partbound != NULL);

	relid = RangeVarGetRelid(makeRangeVar(pstrdup(nspname), pstrdup(relname), -1),
							 AccessExclusiveLock, true);
	/* a partition statement names the parent, maybe a partition itself */
	if (!is_multi_region(partition ? cr_partition_root(relid) : relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" changed in region \"%s\" is not multi-region in this region",
						nspname, relname, origin_region),
				 errhint("Create the table and enable it in every region; replication from \"%s\" resumes then.",
						 origin_region)));
	local_owner_id = cr_relation_owner_named(relid, owner, nspname, relname, origin_region);

	if (!partition)
		cr_ddl_record_names(relid);
	errcallback.callback = replay_error_context;
	errcallback.arg = &rcontext;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	cr_switch_to_owner(local_owner_id, &user);
	(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* the statement must name the same table, with this search_path */
	if (statement_table(stmt, &what, &flags) != relid ||
		(flags & ~STMT_PARTITION) != 0 || partition != ((flags & STMT_PARTITION) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("statement replicated from region \"%s\" does not change table \"%s.%s\" in this region",
						origin_region, nspname, relname),
				 errhint("Give the table and the schemas of search_path \"%s\" the same names in every region.",
						 search_path)));
	replaying = true;
	PG_TRY();
	{
		SPI_connect();
		rc = SPI_execute(text, false, 0);
		if (rc < 0)
			elog(ERROR, "could not run the statement: %s", SPI_result_code_string(rc));
		SPI_finish();
		if (partition)
		{
			AlterTableCmd *cmd = partition_command(stmt);

			check_partition_rows(stmt, origin_region);
			if (cmd != NULL && cmd->subtype == AT_DetachPartition)
				reroute_detached_rows(stmt, relid);
		}
	}
	PG_FINALLY();
	{
		replaying = false;
	}
	PG_END_TRY();
	cr_restore_user(&user);
	error_context_stack = errcallback.previous;
	if (!partition)
		cr_ddl_record_names(relid);

	/* the origin fenced the table (the top of its tree) for this change */
	region = cr_get_region_by_name(origin_region);
	if (region != NULL)
		cr_fence_lift_at_commit(cr_partition_root(relid), region->id);
}
