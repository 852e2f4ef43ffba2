/*-------------------------------------------------------------------------
 *
 * run_as.h
 *	  As whom, and with which search_path, cosmosrep runs code it did not
 *	  write.
 *
 * IDENTIFICATION
 *	  src/run_as.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_RUN_AS_H
#define CR_RUN_AS_H

/* a user switch of cr_switch_to_owner, to undo with cr_restore_user */
typedef struct CrUserContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} CrUserContext;

/* the search_path of statements cosmosrep builds (cr_pin_search_path) */
#define CR_PINNED_SEARCH_PATH	"pg_catalog, pg_temp"

extern void cr_switch_to_owner(Oid owner, CrUserContext *context);
extern void cr_restore_user(CrUserContext *context);
extern int	cr_pin_search_path(void);
extern void cr_unpin_search_path(int nestlevel);

#endif							/* CR_RUN_AS_H */
