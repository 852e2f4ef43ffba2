/*-------------------------------------------------------------------------
 *
 * cosmosrep.h
 *	  Declarations shared across cosmosrep: module state, settings and the
 *	  names of the objects cosmosrep adds to enabled tables.
 *
 * Each .c file has its own header for the functions it exports; this one
 * only holds what every file needs.
 *
 * IDENTIFICATION
 *	  src/cosmosrep.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef COSMOSREP_H
#define COSMOSREP_H

#include "postgres.h"

#define COSMOSREP_SCHEMA			"cosmosrep"
#define COSMOSREP_PLUGIN			"cosmosrep"

/* columns added to every enabled table */
#define CR_VERSION_COLUMN			"_cr_version"
#define CR_BASE_COLUMN				"_cr_base"
#define CR_REGION_COLUMN			"_cr_region"
#define CR_CONFIG_COLUMN			"_cr_config"

/* the triggers installed on every enabled table */
#define CR_TRIGGER_NAME				"cosmosrep_stamp"
#define CR_TRUNCATE_TRIGGER_NAME	"cosmosrep_truncate"

/* prefix of the transactional logical message carrying a delete's base */
#define CR_DELETE_BASE_PREFIX		"cosmosrep.delete_base"

/* region ids live in the low 8 bits of a version */
#define CR_MAX_REGION_ID			255

/* a user switch of cr_switch_to_owner, to undo with cr_restore_user */
typedef struct CrUserContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} CrUserContext;

/* in cosmosrep.c */
extern void cr_switch_to_owner(Oid owner, CrUserContext *context);
extern void cr_restore_user(CrUserContext *context);
extern bool cr_loaded_at_startup;
extern int	cr_max_clock_skew_ms;
extern int	cr_stability_interval_ms;
extern int	cr_conflict_retention_s;
extern bool cr_record_resolved_conflicts;
extern void cr_require_preload(void);

#endif							/* COSMOSREP_H */
