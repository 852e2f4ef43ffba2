/*-------------------------------------------------------------------------
 *
 * signing.c
 *	  Tags that prove a logical message was written by cosmosrep.
 *
 * NOTES
 *	  cosmosrep carries catalog changes (table DDL, truncates, failover
 *	  priorities, write regions, resolved feed entries, stable versions,
 *	  the rows of an enabled table, the base of a delete) in logical
 *	  decoding messages.  pg_logical_emit_message() is executable by every
 *	  role, so a message's prefix proves nothing about who wrote it: without
 *	  more, any role that can log in could empty a table in every other
 *	  region or switch off their writes.
 *
 *	  Every message cosmosrep writes therefore ends with a tag: SipHash-2-4
 *	  of (transactional flag, prefix, content) under a 128-bit key that
 *	  only this server holds.  The output plugin, which decodes the WAL of
 *	  the same server, forwards a message with one of cosmosrep's prefixes
 *	  only if its tag matches, and strips the tag: the key never leaves the
 *	  server and peers never see a tag.  A message that does not match is
 *	  logged (with its prefix) and skipped, and the stream goes on.
 *
 *	  The key is created from pg_strong_random() the first time the server
 *	  starts with cosmosrep preloaded, in $PGDATA/cosmosrep.key (mode of the
 *	  data directory's files, written with a durable rename), and read into
 *	  shared memory at every start; WAL written before a restart is
 *	  decoded with the same key.  No SQL role can read it short of reading
 *	  server files (pg_read_server_files), which is superuser-equivalent.
 *	  A physical copy of the data directory (pg_basebackup) carries it;
 *	  pg_upgrade does not, which is right, since slots do not survive it.
 *
 *	  A forger without the key must guess a 64-bit tag; every guess is a
 *	  message in the WAL that is refused with a log line.  A tag binds the
 *	  prefix, the flag and the content, so seeing one tag (which needs the
 *	  REPLICATION attribute to read raw WAL) allows only a replay of that
 *	  very message.
 *
 * IDENTIFICATION
 *	  src/signing.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "miscadmin.h"
#include "replication/message.h"
#include "storage/fd.h"
#include "storage/shmem.h"

#include "names.h"
#include "shmem.h"
#include "signing.h"

#define KEY_FILE			"cosmosrep.key"
#define KEY_FILE_TMP		"cosmosrep.key.tmp"

typedef struct SigningShared
{
	uint64		key[2];
} SigningShared;

/* in shared memory when the library was preloaded, else NULL */
static SigningShared *signing = NULL;

/* SipHash-2-4, incrementally: state, and the bytes of a partial word */
typedef struct SipHash
{
	uint64		v[4];
	uint64		tail;			/* bytes not yet in a whole word, low first */
	int			ntail;
	uint64		total;			/* bytes hashed */
} SipHash;

static void siphash_init(SipHash *h, const uint64 *key);
static void siphash_update(SipHash *h, const void *data, Size len);
static uint64 siphash_final(SipHash *h);
static uint64 message_tag(const char *prefix, const char *content, Size size,
						  bool transactional);
static void read_or_create_key(uint64 *key);

Size
cr_signing_shmem_size(void)
{
	return MAXALIGN(sizeof(SigningShared));
}

/*
 * Attach to (and on first call, fill) the key.  Called from the shmem
 * startup hook with AddinShmemInitLock held.
 */
void
cr_signing_shmem_init(void)
{
	bool		found;

	signing = ShmemInitStruct("cosmosrep signing", cr_signing_shmem_size(), &found);
	if (!found)
		read_or_create_key(signing->key);
}

/*
 * Read the key of this server, creating it first if there is none.
 */
static void
read_or_create_key(uint64 *key)
{
	int			fd;
	ssize_t		n;

	fd = OpenTransientFile(KEY_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0 && errno == ENOENT)
	{
		uint64		fresh[2];

		if (!pg_strong_random(fresh, sizeof(fresh)))
			ereport(FATAL,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate the message key of cosmosrep")));
		fd = OpenTransientFile(KEY_FILE_TMP, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
		if (fd < 0)
			ereport(FATAL,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", KEY_FILE_TMP)));
		errno = 0;
		if (write(fd, fresh, sizeof(fresh)) != sizeof(fresh))
		{
			if (errno == 0)
				errno = ENOSPC;
			ereport(FATAL,
					(errcode_for_file_access(),
					 errmsg("could not write file \"%s\": %m", KEY_FILE_TMP)));
		}
		if (pg_fsync(fd) != 0)
			ereport(FATAL,
					(errcode_for_file_access(),
					 errmsg("could not fsync file \"%s\": %m", KEY_FILE_TMP)));
		CloseTransientFile(fd);
		durable_rename(KEY_FILE_TMP, KEY_FILE, FATAL);
		fd = OpenTransientFile(KEY_FILE, O_RDONLY | PG_BINARY);
	}
	if (fd < 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", KEY_FILE)));
	n = read(fd, key, 2 * sizeof(uint64));
	if (n != 2 * sizeof(uint64))
		ereport(FATAL,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not read file \"%s\": read %d of %zu bytes",
						KEY_FILE, (int) n, 2 * sizeof(uint64))));
	CloseTransientFile(fd);
}

/*
 * Write a logical message of cosmosrep, its content followed by its tag.
 * Needs the preloaded library (the key is in shared memory).  Returns the
 * message's LSN.
 */
XLogRecPtr
cr_log_message(const char *prefix, const char *content, Size size,
			   bool transactional)
{
	uint64		tag;
	char		small[256];
	char	   *buf;
	XLogRecPtr	lsn;

	cr_require_preload();
	tag = message_tag(prefix, content, size, transactional);
	buf = size + CR_MESSAGE_TAG_SIZE <= sizeof(small) ? small :
		palloc(size + CR_MESSAGE_TAG_SIZE);
	memcpy(buf, content, size);
	memcpy(buf + size, &tag, CR_MESSAGE_TAG_SIZE);
	lsn = LogLogicalMessage(prefix, buf, size + CR_MESSAGE_TAG_SIZE, transactional);
	if (buf != small)
		pfree(buf);
	return lsn;
}

/*
 * Whether a decoded message with one of cosmosrep's prefixes was written
 * by cosmosrep on this server: its last CR_MESSAGE_TAG_SIZE bytes are the
 * tag of the rest.  Always false without the preloaded library.
 */
bool
cr_message_authentic(const char *prefix, const char *content, Size size,
					 bool transactional)
{
	uint64		tag;
	uint64		expected;

	if (signing == NULL || size < CR_MESSAGE_TAG_SIZE)
		return false;
	size -= CR_MESSAGE_TAG_SIZE;
	memcpy(&tag, content + size, CR_MESSAGE_TAG_SIZE);
	expected = message_tag(prefix, content, size, transactional);
	/* no early exit: the time taken says nothing of where they differ */
	return ((tag ^ expected) == 0);
}

static uint64
message_tag(const char *prefix, const char *content, Size size,
			bool transactional)
{
	SipHash		h;
	uint8		flag = transactional ? 1 : 0;

	siphash_init(&h, signing->key);
	siphash_update(&h, &flag, 1);
	siphash_update(&h, prefix, strlen(prefix) + 1);
	siphash_update(&h, content, size);
	return siphash_final(&h);
}

/*
 * SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed pseudorandom
 * function of 64-bit output, made for short inputs.  Words are read
 * little-endian, as the reference does.
 */
#define ROTL64(x, b)	(((x) << (b)) | ((x) >> (64 - (b))))

static inline void
sip_round(uint64 *v)
{
	v[0] += v[1];
	v[1] = ROTL64(v[1], 13);
	v[1] ^= v[0];
	v[0] = ROTL64(v[0], 32);
	v[2] += v[3];
	v[3] = ROTL64(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = ROTL64(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = ROTL64(v[1], 17);
	v[1] ^= v[2];
	v[2] = ROTL64(v[2], 32);
}

static inline void
sip_compress(SipHash *h, uint64 m)
{
	h->v[3] ^= m;
	sip_round(h->v);
	sip_round(h->v);
	h->v[0] ^= m;
}

static void
siphash_init(SipHash *h, const uint64 *key)
{
	h->v[0] = key[0] ^ UINT64CONST(0x736f6d6570736575);
	h->v[1] = key[1] ^ UINT64CONST(0x646f72616e646f6d);
	h->v[2] = key[0] ^ UINT64CONST(0x6c7967656e657261);
	h->v[3] = key[1] ^ UINT64CONST(0x7465646279746573);
	h->tail = 0;
	h->ntail = 0;
	h->total = 0;
}

static void
siphash_update(SipHash *h, const void *data, Size len)
{
	const uint8 *p = data;

	h->total += len;
	while (len > 0)
	{
		h->tail |= ((uint64) *p++) << (8 * h->ntail);
		len--;
		if (++h->ntail == 8)
		{
			sip_compress(h, h->tail);
			h->tail = 0;
			h->ntail = 0;
		}
	}
}

static uint64
siphash_final(SipHash *h)
{
	sip_compress(h, h->tail | (h->total << 56));
	h->v[2] ^= 0xff;
	for (int i = 0; i < 4; i++)
		sip_round(h->v);
	return h->v[0] ^ h->v[1] ^ h->v[2] ^ h->v[3];
}
