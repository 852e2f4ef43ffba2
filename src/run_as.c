/*-------------------------------------------------------------------------
 *
 * run_as.c
 *	  As whom, and with which search_path, cosmosrep runs code it did not
 *	  write.
 *
 * NOTES
 *	  Two rules, one function each.  A table owner's code (triggers,
 *	  constraints, type I/O, defaults, index expressions, resolvers) runs
 *	  as that owner with SECURITY_RESTRICTED_OPERATION and an empty
 *	  search_path (cr_switch_to_owner), whoever made cosmosrep reach it.
 *	  A statement that cosmosrep builds itself runs with a pinned
 *	  search_path (cr_pin_search_path), so that no operator or function
 *	  of a caller's schema stands in for one of pg_catalog's.  Both undo
 *	  their settings through a GUC nest level, which an error unwinds
 *	  with its (sub)transaction.
 *
 * IDENTIFICATION
 *	  src/run_as.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "run_as.h"

/*
 * Act as owner, with SECURITY_RESTRICTED_OPERATION, an empty search_path
 * and a GUC nesting level that undoes the settings owner's code changes,
 * as core's subscriptions do without run_as_owner (and as index builds do,
 * which PostgreSQL 17 also gives a fixed search_path): what a table
 * owner's code runs while cosmosrep works on the table (apply, the
 * careful path, the join's copy, enable's rows, the feed functions) never
 * runs as a superuser or as the caller, and never resolves a name through
 * the caller's search_path.  Callers resolve every name they need before
 * switching, or qualify it.  An error restores the identity and the
 * settings with the (sub)transaction's abort.
 */
void
cr_switch_to_owner(Oid owner, CrUserContext *context)
{
	GetUserIdAndSecContext(&context->save_userid, &context->save_sec_context);
	context->save_nestlevel = NewGUCNestLevel();
	/* already empty (the apply worker's), it needs no setting per change */
	if (namespace_search_path[0] != '\0')
		(void) set_config_option("search_path", "", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	SetUserIdAndSecContext(owner,
						   context->save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
cr_restore_user(CrUserContext *context)
{
	AtEOXact_GUC(false, context->save_nestlevel);
	SetUserIdAndSecContext(context->save_userid, context->save_sec_context);
}

/*
 * Pin search_path for a statement that cosmosrep builds, so that no
 * function or operator of the caller's schemas can stand in for one of
 * pg_catalog's (CVE-2018-1058): the statement names cosmosrep's objects
 * with their schema, and with "pg_catalog, pg_temp" an unqualified
 * operator or function resolves in pg_catalog only (pg_temp is never
 * searched for those).  An empty path, which apply workers run with, is
 * as safe and is left alone, so the hot paths pay nothing.  Returns the
 * GUC nest level to pass to cr_unpin_search_path, or -1.
 */
int
cr_pin_search_path(void)
{
	int			nestlevel;

	if (namespace_search_path[0] == '\0' ||
		strcmp(namespace_search_path, CR_PINNED_SEARCH_PATH) == 0)
		return -1;
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", CR_PINNED_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return nestlevel;
}

void
cr_unpin_search_path(int nestlevel)
{
	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
}
