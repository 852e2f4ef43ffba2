/*-------------------------------------------------------------------------
 *
 * row_trigger.c
 *	  BEFORE row trigger of multi-region tables: stamps each local write.
 *
 * NOTES
 *	  Every local INSERT and UPDATE is marked with this region.
 *	  INSERT gets a new version and base 0.  UPDATE gets a new version and,
 *	  as base, the version of the row it replaces: the base travels with the
 *	  new row and tells the other regions which version this write was made
 *	  against, so that "concurrent" can mean concurrent.  DELETE leaves the
 *	  row alone and writes a transactional logical message carrying a new
 *	  version for the delete and the deleted row's version as its base; the
 *	  output plugin attaches both to the delete, whose WAL record holds only
 *	  the primary key.  The delete also leaves a tombstone (tombstone.c).
 *
 *	  The trigger fires for local writes only.  Apply workers and the
 *	  initial copy run with session_replication_role = replica, so rows
 *	  arriving from other regions keep the version they were written with.
 *
 * IDENTIFICATION
 *	  src/row_trigger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "replication/message.h"
#include "utils/rel.h"

#include "catalog.h"
#include "cosmosrep.h"
#include "hlc.h"
#include "row_trigger.h"
#include "tombstone.h"

PG_FUNCTION_INFO_V1(cosmosrep_stamp_row);

static int	stamp_column(Relation rel, const char *colname);

/* attribute number of one of cosmosrep's columns, or an error */
static int
stamp_column(Relation rel, const char *colname)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), colname);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" has no column \"%s\"",
						RelationGetRelationName(rel), colname),
				 errhint("Call cosmosrep.enable_table to make the table multi-region.")));
	return attnum;
}

Datum
cosmosrep_stamp_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	int			version_att;
	int			region;
	int			cols[3];
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	bool		isnull;
	int64		base = 0;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cosmosrep.stamp_row() must be called as a BEFORE row trigger")));

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	version_att = stamp_column(rel, CR_VERSION_COLUMN);

	if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		if (XLogLogicalInfoActive())
		{
			CrDeleteBase payload;

			payload.relid = RelationGetRelid(rel);
			payload.version = cr_hlc_next_version(cr_local_region_id(false));
			payload.base_version =
				DatumGetInt64(heap_getattr(trigdata->tg_trigtuple, version_att,
										   desc, &isnull));
			LogLogicalMessage(CR_DELETE_BASE_PREFIX, (const char *) &payload,
							  sizeof(payload), true);
			cr_tombstone_record(payload.relid,
								cr_tombstone_key(rel, trigdata->tg_trigslot),
								payload.version);
		}
		return PointerGetDatum(trigdata->tg_trigtuple);
	}

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		Datum		old = heap_getattr(trigdata->tg_trigtuple, version_att,
									   desc, &isnull);

		if (!isnull)
		{
			base = DatumGetInt64(old);
			/* a local update always supersedes the row it replaces */
			cr_hlc_observe(base);
		}
	}

	region = cr_local_region_id(false);
	cols[0] = version_att;
	values[0] = Int64GetDatum(cr_hlc_next_version(region));
	cols[1] = stamp_column(rel, CR_BASE_COLUMN);
	values[1] = Int64GetDatum(base);
	cols[2] = stamp_column(rel, CR_REGION_COLUMN);
	values[2] = Int16GetDatum((int16) region);

	return PointerGetDatum(heap_modify_tuple_by_cols(TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
													 trigdata->tg_newtuple :
													 trigdata->tg_trigtuple,
													 desc, 3, cols, values, nulls));
}
