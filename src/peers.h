/*-------------------------------------------------------------------------
 *
 * peers.h
 *	  The status of each peer link, in shared memory.
 *
 * IDENTIFICATION
 *	  src/peers.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_PEERS_H
#define CR_PEERS_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "storage/spin.h"

#define CR_MAX_PEERS			256
#define CR_LATENCY_SAMPLES		1024
#define CR_ERROR_LEN			512

typedef enum CrPeerState
{
	CR_PEER_STOPPED = 0,
	CR_PEER_PAUSED,
	CR_PEER_CONNECTING,
	CR_PEER_CATCHING_UP,
	CR_PEER_STREAMING,
	CR_PEER_UNREACHABLE,
	CR_PEER_ERROR
} CrPeerState;

extern const char *const CrPeerStateNames[];

/*
 * What one apply worker reports about the peer it streams from.  The entry
 * outlives the worker, so that the last error survives a restart.
 *
 * in_use, dboid, peer_id, pid, failures and next_start are protected by
 * CR_LWLOCK_WORKERS; the rest by "mutex".  Only peers.c writes the rest
 * of an entry: for the apply worker owning it, through the
 * cr_peer_status_* functions below, and for the launcher, while no worker
 * runs (pid 0); the launcher writes pid, failures and next_start holding
 * CR_LWLOCK_WORKERS exclusively.
 * Readers take the same locks (status.c copies an entry under both).
 */
typedef struct CrPeerStatus
{
	bool		in_use;
	Oid			dboid;
	int			peer_id;
	pid_t		pid;			/* running apply worker, 0 if none */
	int			failures;		/* consecutive failed starts */
	TimestampTz next_start;		/* launcher waits until then (backoff) */

	slock_t		mutex;
	CrPeerState state;
	XLogRecPtr	received_lsn;	/* last position received from the peer */
	XLogRecPtr	applied_lsn;	/* end of the last applied transaction */
	XLogRecPtr	peer_end_lsn;	/* end of the peer's WAL, as it reported */
	TimestampTz last_commit_time;	/* origin commit time of last applied */
	TimestampTz last_applied_at;
	TimestampTz last_message_at;
	int64		transactions_applied;
	int64		changes_applied;
	int64		conflicts;		/* conflicts detected in applied changes */
	int			latency_next;	/* ring of latencies, microseconds */
	int			latency_count;
	int64		latency_us[CR_LATENCY_SAMPLES];
	char		last_error[CR_ERROR_LEN];
	TimestampTz last_error_at;
	int64		stable_version; /* the peer's last stable version applied
								 * here (stability.c), 0 if none yet */
	XLogRecPtr	failed_lsn;		/* the remote transaction (its end) whose
								 * change failed, and how many times in a */
	int			failed_attempts;	/* row: apply retries it change by change */
	int			protocol_version;	/* of the stream, 0 before it started */
} CrPeerStatus;

extern Size cr_peers_shmem_size(void);
extern void cr_peers_shmem_init(void);

extern CrPeerStatus *cr_peer_status(int index);
extern int	cr_peer_status_count(void);
extern int64 cr_peer_stable_version(Oid dboid, int peer_id);
extern int64 cr_peer_lag_ms(Oid dboid, int peer_id);
extern pid_t cr_peer_worker_pid(Oid dboid, int peer_id);

/* the entries, for the launcher (CR_LWLOCK_WORKERS held exclusively) */
extern CrPeerStatus *cr_peer_status_of(Oid dboid, int peer_id);
extern void cr_peer_status_init(CrPeerStatus *ps, int peer_id);
extern void cr_peer_status_set_paused(CrPeerStatus *ps);

/* the writes of the apply worker owning an entry */
extern void cr_peer_status_set_state(CrPeerStatus *ps, CrPeerState state);
extern void cr_peer_status_set_protocol_version(CrPeerStatus *ps, int version);
extern void cr_peer_status_set_error(CrPeerStatus *ps, const char *message);
extern void cr_peer_status_record_failure(CrPeerStatus *ps, XLogRecPtr final_lsn);
extern XLogRecPtr cr_peer_status_failed_transaction(CrPeerStatus *ps, int attempts);
extern void cr_peer_status_record_received(CrPeerStatus *ps, XLogRecPtr received,
										   XLogRecPtr peer_end, bool set_progress,
										   XLogRecPtr applied_end);
extern void cr_peer_status_record_commit(CrPeerStatus *ps, XLogRecPtr applied_lsn,
										 TimestampTz last_commit_time,
										 TimestampTz now, int ntransactions,
										 const int64 *latencies, int changes,
										 int conflicts);
extern void cr_peer_status_set_stable_version(CrPeerStatus *ps, int64 version);
extern void cr_peer_status_reset_backoff(CrPeerStatus *ps);
extern void cr_peer_status_worker_exit(CrPeerStatus *ps);
extern bool cr_peer_status_stop_worker(int peer_id, int hold_off_ms);

#endif							/* CR_PEERS_H */
