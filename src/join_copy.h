/*-------------------------------------------------------------------------
 *
 * join_copy.h
 *	  The initial copy of a joining region's data (join_copy.c), for
 *	  join.c.
 *
 * IDENTIFICATION
 *	  src/join_copy.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_JOIN_COPY_H
#define CR_JOIN_COPY_H

#include "libpq-fe.h"
#include "nodes/pg_list.h"

/* a multi-region table as the via region configures it */
typedef struct CrJoinTable
{
	char	   *nspname;
	char	   *relname;
	char	   *policy;
	char	   *path;			/* NULL unless the policy has a path */
	char	   *resolver;		/* qualified function name, or NULL */
	int64		config_version;
} CrJoinTable;

extern void cr_join_copy_at_snapshot(PGconn *conn, const char *via_region,
									 const char *snapshot, List *tables);

#endif							/* CR_JOIN_COPY_H */
