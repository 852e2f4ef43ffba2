/*-------------------------------------------------------------------------
 *
 * ddl.h
 *	  Schema changes of multi-region tables: captured where they are made,
 *	  replayed in the other regions at their place in the stream.
 *
 * IDENTIFICATION
 *	  src/ddl.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_DDL_H
#define CR_DDL_H

#include "access/attnum.h"
#include "access/tupdesc.h"
#include "nodes/pg_list.h"

extern void cr_ddl_define_settings(void);
extern void cr_ddl_install_hooks(void);
extern void cr_ddl_apply_statement(const char *content, Size size,
								   const char *origin_region);

/* what apply's relation map asks of the columns' history */
extern Oid	cr_ddl_former_table(const char *nspname, const char *relname);
extern bool cr_ddl_attnum_known(Oid relid, AttrNumber attnum);
extern bool cr_ddl_name_known(Oid relid, const char *attname);
extern int	cr_ddl_former_column(Oid relid, AttrNumber attnum, char **names,
								 int nnames, TupleDesc desc);

#endif							/* CR_DDL_H */
