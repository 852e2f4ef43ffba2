/*-------------------------------------------------------------------------
 *
 * tables.h
 *	  Making tables multi-region: enable, alter policy, disable.
 *
 * IDENTIFICATION
 *	  src/tables.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_TABLES_H
#define CR_TABLES_H

#include "lib/stringinfo.h"
#include "utils/relcache.h"

#include "catalog.h"

/* actions of a DDL message */
#define CR_DDL_ENABLE			'E'
#define CR_DDL_ALTER_POLICY		'A'
#define CR_DDL_DISABLE			'D'

extern bool cr_is_cosmosrep_column(const char *name);
extern void cr_table_enable(Oid relid, const char *policy, const char *path,
							const char *resolver, int64 config_version);
extern void cr_table_alter_policy(Oid relid, const char *policy,
								  const char *path, const char *resolver);
extern void cr_table_remember_config(Oid relid, const char *policy,
									 const char *path, const char *resolver,
									 int64 config_version);
extern void cr_table_disable(Oid relid);
extern void cr_build_ddl_message(StringInfo buf, char action, Relation rel,
								 const CrTableConfig *config);
extern void cr_table_apply_ddl(const char *content, Size size,
							   const char *origin_region);

extern void cr_tables_define_settings(void);

#endif							/* CR_TABLES_H */
