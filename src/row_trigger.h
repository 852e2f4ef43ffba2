/*-------------------------------------------------------------------------
 *
 * row_trigger.h
 *	  The row trigger that stamps local writes of multi-region tables.
 *
 * IDENTIFICATION
 *	  src/row_trigger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_ROW_TRIGGER_H
#define CR_ROW_TRIGGER_H

/*
 * Payload of the transactional logical message written before each local
 * delete: the delete's own version, the version the deleted row had (its
 * base) and the configuration the delete was made under, which the output
 * plugin ships with the delete.  The entries of the delete's version
 * vector (seen.c) follow it in the message.
 */
typedef struct CrDeleteBase
{
	Oid			relid;
	int64		version;
	int64		base_version;
	int64		config_version;
} CrDeleteBase;

extern void cr_log_delete_base(const CrDeleteBase *payload, const bytea *seen);

#endif							/* CR_ROW_TRIGGER_H */
