/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  Every read and write of cosmosrep's configuration tables.
 *
 * IDENTIFICATION
 *	  src/catalog.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_CATALOG_H
#define CR_CATALOG_H

#include "executor/spi.h"
#include "nodes/pg_list.h"

typedef struct CrRegion
{
	int			id;
	char	   *name;
	char	   *dsn;
	bool		is_local;
	int			failover_priority;
	bool		paused;
	bool		accepts_writes; /* may write multi-region tables */
} CrRegion;

typedef struct CrTableConfig
{
	Oid			relid;
	char	   *policy;
	char	   *path;			/* NULL unless last_writer_wins on a column */
	char	   *resolver;		/* the resolver's schema-qualified name, NULL
								 * unless custom; looked up at use
								 * (cr_lookup_resolver) */
	int64		config_version; /* version of the enable or policy change
								 * that set it: the newest one wins */
} CrTableConfig;

extern Oid	cr_schema_oid(void);
extern Oid	cr_relation_owner(Oid relid);
extern Oid	cr_relation_owner_named(Oid relid, const char *owner, const char *nspname,
									const char *relname, const char *origin_region);
extern Oid	cr_partition_root(Oid relid);
extern bool cr_table_has_rows(Relation rel);
extern List *cr_partitions_with_rows(Relation rel);
extern void cr_check_partition_layouts(Relation rel, bool attaching);
extern int	cr_catalog_query(SPIPlanPtr *plan, const char *sql, int nargs,
							 Oid *argtypes, Datum *values, const char *nulls,
							 bool read_only);
extern uint64 cr_catalog_write(SPIPlanPtr *plan, const char *sql, int nargs,
							   Oid *argtypes, Datum *values, const char *nulls,
							   int expected);
extern int	cr_local_region_id(bool missing_ok);
extern bool cr_local_region_accepts_writes(void);
extern bool cr_local_region_upgrading(void);
extern bool cr_upgrade_prepared(void);
extern char *cr_resolver_name(Oid funcid);
extern int	cr_arbiter_region_id(void);
extern const char *cr_local_region_name(void);
extern List *cr_get_regions_cached(void);

extern uint64 cr_regions_generation;
extern List *cr_get_regions(void);
extern CrRegion *cr_get_region_by_name(const char *name);
extern CrRegion *cr_get_region_by_id(int id);
extern void cr_insert_region(const CrRegion *region);
extern void cr_delete_region(int id);
extern void cr_set_region_paused(int id, bool paused);
extern void cr_set_failover_priority(const char *name, int priority, int64 version);
extern void cr_set_write_regions(const char *write_region, int64 version);
extern void cr_write_regions_adopt_version(int64 version);

extern CrTableConfig *cr_get_table_config(Oid relid);
extern void cr_insert_table_config(const CrTableConfig *config);
extern void cr_update_table_config(const CrTableConfig *config);
extern void cr_delete_table_config(Oid relid);
extern int64 cr_table_config_version(Oid relid);
extern void cr_record_policy_history(const CrTableConfig *config);
extern CrTableConfig *cr_get_policy_history(Oid relid, int64 config_version);
extern void cr_forget_policy_history(Oid relid);

#endif							/* CR_CATALOG_H */
