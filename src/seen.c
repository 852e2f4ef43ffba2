/*-------------------------------------------------------------------------
 *
 * seen.c
 *	  The writes a row has seen: a version vector per row (_cr_seen).
 *
 * NOTES
 *	  A version carries its writer's region in its low 8 bits (hlc.h), and
 *	  a region's versions rise.  The writes of one key that a row's content
 *	  is made of, and every write they were made after, are therefore told
 *	  by one version per region, the highest of that region among them:
 *	  a region's later write of a key is made on top of its earlier ones
 *	  (the row trigger stamps it after locking the row it replaces, and
 *	  refuses an insert that a delete of the same key overtook).
 *
 *	  With one exception: a region can lose its own write for a while.  A
 *	  remote write that had not seen it replaces it by version (a conflict
 *	  decided tentatively, until the arbiter's write arrives), and the
 *	  region's next write of the key, made on that row, would claim by its
 *	  version every earlier write of the region, the lost one too.  So
 *	  when a remote write replaces a row holding writes of this region
 *	  that it had not seen (cr_seen_lost), the region remembers them, for
 *	  the key, as an exclusion: a range (lo, hi] of its versions, kept
 *	  beside the row (cosmosrep.lost_write, so that the row stays the
 *	  same bytes in every region) or in the key's tombstone.  The
 *	  region's next write of the key carries the exclusion in its vector
 *	  (cr_seen_with_lost), the writes made on that one keep it, and the
 *	  arbiter's write, which has seen both sides, drops it
 *	  (cr_seen_merge).  Exclusions exist only while such conflicts are
 *	  tentative.
 *
 *	  The vector is a bytea of 8-byte big-endian integers: one positive
 *	  version per region (the highest), then each exclusion as the pair
 *	  -hi, lo.  8 bytes per region that wrote the key or a write it was
 *	  made after, 16 per exclusion.  NULL stands for a row written before
 *	  cosmosrep kept vectors: it has seen itself and the version it
 *	  replaced (cr_seen_or_base).
 *
 * IDENTIFICATION
 *	  src/seen.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/pg_bswap.h"

#include "names.h"
#include "seen.h"

#define NREGIONS	(CR_MAX_REGION_ID + 1)
#define MAX_EXCLUSIONS 64

/* a vector taken apart */
typedef struct Seen
{
	int64		top[NREGIONS];	/* the highest version seen, 0: none */
	int			nexcl;
	int64		lo[MAX_EXCLUSIONS];	/* versions in (lo, hi] not seen */
	int64		hi[MAX_EXCLUSIONS];
} Seen;

static inline int
region_of(int64 version)
{
	return (int) (version & CR_MAX_REGION_ID);
}

/*
 * Add the exclusion (lo, hi], unless one already holds it.  A vector holds
 * MAX_EXCLUSIONS at most: past that (a key whose writes here were replaced
 * unseen that many times while no arbiter resolved them), the new range
 * widens an exclusion of its region to cover both.  That only ever counts
 * fewer writes as seen: a write made after some of them may then be taken
 * for a conflict, which the policy decides.  Only when the vector holds as
 * many exclusions of other regions is the range not kept, and the writes
 * in it count as seen (a conflict with them is not detected).  Neither
 * changes what the regions converge to: that is the order of versions
 * and the arbiter's writes.
 */
static void
add_exclusion(Seen *s, int64 lo, int64 hi)
{
	int			widen = -1;

	if (hi <= lo)
		return;
	for (int i = 0; i < s->nexcl; i++)
	{
		if (region_of(s->hi[i]) != region_of(hi))
			continue;
		if (s->lo[i] <= lo && hi <= s->hi[i])
			return;
		widen = i;
	}
	if (s->nexcl == MAX_EXCLUSIONS && widen >= 0)
	{
		s->lo[widen] = Min(s->lo[widen], lo);
		s->hi[widen] = Max(s->hi[widen], hi);
		return;
	}
	/* full of other regions' (64 regions at once): this one is not kept */
	if (s->nexcl == MAX_EXCLUSIONS)
		return;
	s->lo[s->nexcl] = lo;
	s->hi[s->nexcl] = hi;
	s->nexcl++;
}

static void
seen_read(const bytea *seen, Seen *s)
{
	const char *p;
	int			n;

	memset(s->top, 0, sizeof(s->top));
	s->nexcl = 0;
	if (seen == NULL)
		return;
	p = VARDATA_ANY(seen);
	n = VARSIZE_ANY_EXHDR(seen) / sizeof(int64);
	for (int i = 0; i < n; i++)
	{
		uint64		big;
		int64		v;

		memcpy(&big, p + i * sizeof(int64), sizeof(int64));
		v = (int64) pg_ntoh64(big);
		if (v > 0)
			s->top[region_of(v)] = Max(s->top[region_of(v)], v);
		else if (i + 1 < n)
		{
			memcpy(&big, p + (++i) * sizeof(int64), sizeof(int64));
			add_exclusion(s, (int64) pg_ntoh64(big), -v);
		}
	}
}

static void
put(char **p, int64 v)
{
	uint64		big = pg_hton64((uint64) v);

	memcpy(*p, &big, sizeof(int64));
	*p += sizeof(int64);
}

static bytea *
seen_write(const Seen *s)
{
	int			n = 0;
	bytea	   *result;
	char	   *p;

	for (int r = 0; r < NREGIONS; r++)
		n += s->top[r] != 0;
	n += 2 * s->nexcl;
	result = palloc(VARHDRSZ + n * sizeof(int64));
	SET_VARSIZE(result, VARHDRSZ + n * sizeof(int64));
	p = VARDATA(result);
	for (int r = 0; r < NREGIONS; r++)
		if (s->top[r] != 0)
			put(&p, s->top[r]);
	for (int i = 0; i < s->nexcl; i++)
	{
		put(&p, -s->hi[i]);
		put(&p, s->lo[i]);
	}
	return result;
}

static bool
seen_covers(const Seen *s, int64 version)
{
	if (s->top[region_of(version)] < version)
		return false;
	for (int i = 0; i < s->nexcl; i++)
		if (region_of(s->hi[i]) == region_of(version) &&
			s->lo[i] < version && version <= s->hi[i])
			return false;
	return true;
}

/* the n-th 8-byte integer of a vector's bytes */
static inline int64
get(const char *p, int n)
{
	uint64		big;

	memcpy(&big, p + n * sizeof(int64), sizeof(int64));
	return (int64) pg_ntoh64(big);
}

/*
 * seen (NULL: nothing) with one more write at version, a later one.  Every
 * local write does this, so it works on the bytes: a vector as seen_write
 * writes it (one version per region, in region order, then exclusion
 * pairs) gains or raises its region's version in place, and comes out as
 * seen_write would write it.  Anything else goes the long way.
 */
bytea *
cr_seen_add(const bytea *seen, int64 version)
{
	int			region = region_of(version);
	int			n = seen ? VARSIZE_ANY_EXHDR(seen) / sizeof(int64) : 0;
	const char *in = seen ? VARDATA_ANY(seen) : NULL;
	bytea	   *result;
	char	   *p;
	int			i = 0;
	int			prev = -1;
	bool		placed = false;
	Seen		s;

	result = palloc(VARHDRSZ + (n + 1) * sizeof(int64));
	p = VARDATA(result);
	for (; i < n && get(in, i) > 0; i++)
	{
		int64		v = get(in, i);

		if (region_of(v) <= prev)
			break;				/* not in region order: the long way */
		prev = region_of(v);
		if (!placed && region_of(v) >= region)
		{
			put(&p, region_of(v) == region ? Max(v, version) : version);
			placed = true;
			if (region_of(v) == region)
				continue;
		}
		put(&p, v);
	}
	if ((n - i) % 2 == 0 && (i == n || get(in, i) <= 0))
	{
		if (!placed)
			put(&p, version);
		memcpy(p, in + i * sizeof(int64), (n - i) * sizeof(int64));
		p += (n - i) * sizeof(int64);
		SET_VARSIZE(result, p - (char *) result);
		return result;
	}
	pfree(result);
	seen_read(seen, &s);
	s.top[region] = Max(s.top[region], version);
	return seen_write(&s);
}

/*
 * What a row made of both a and b has seen (the arbiter's write): per
 * region the higher version, and excluded only what neither has seen.
 * The versions of one region that one side excludes are checked against
 * the other side at each bound of the exclusions.
 */
bytea *
cr_seen_merge(const bytea *a, const bytea *b)
{
	Seen		sa;
	Seen		sb;
	Seen		m;

	seen_read(a, &sa);
	seen_read(b, &sb);
	memset(m.top, 0, sizeof(m.top));
	m.nexcl = 0;
	for (int r = 0; r < NREGIONS; r++)
		m.top[r] = Max(sa.top[r], sb.top[r]);
	for (int side = 0; side < 2; side++)
	{
		const Seen *x = side == 0 ? &sa : &sb;
		const Seen *y = side == 0 ? &sb : &sa;

		/*
		 * An exclusion of x, cut to what y has not seen either: y's top
		 * and y's own exclusions (taken once, from side 0, where both
		 * sides exclude the same versions).
		 */
		for (int i = 0; i < x->nexcl; i++)
		{
			int			r = region_of(x->hi[i]);
			int64		lo = Max(x->lo[i], y->top[r]);

			add_exclusion(&m, lo, x->hi[i]);
			for (int j = 0; side == 0 && j < y->nexcl; j++)
				if (region_of(y->hi[j]) == r)
					add_exclusion(&m, Max(x->lo[i], y->lo[j]),
								  Min(Min(x->hi[i], y->hi[j]), lo));
		}
	}
	return seen_write(&m);
}

/*
 * The writes of region (this one) that a row that had seen local_seen
 * held and a remote write that had seen incoming_seen had not: as a
 * vector of exclusions only, or NULL for none.  See the NOTES.
 */
bytea *
cr_seen_lost(const bytea *incoming_seen, const bytea *local_seen, int region)
{
	Seen		in;
	Seen		local;
	Seen		lost;

	seen_read(local_seen, &local);
	seen_read(incoming_seen, &in);
	if (local.top[region] <= in.top[region])
		return NULL;
	seen_read(NULL, &lost);
	add_exclusion(&lost, Max(in.top[region], region), local.top[region]);
	return seen_write(&lost);
}

/*
 * seen, with the exclusions of lost (cr_seen_lost, or NULL) that lie above
 * what seen has seen of their region: what a write made on a row that
 * replaced this region's writes has not seen.
 */
bytea *
cr_seen_with_lost(const bytea *seen, const bytea *lost)
{
	Seen		s;
	Seen		l;

	if (lost == NULL)
		return (bytea *) seen;
	seen_read(seen, &s);
	seen_read(lost, &l);
	for (int i = 0; i < l.nexcl; i++)
		add_exclusion(&s, Max(l.lo[i], s.top[region_of(l.hi[i])]), l.hi[i]);
	return seen_write(&s);
}

/*
 * What a write at version has seen: seen, or for a write made before
 * cosmosrep kept vectors (NULL), itself and the version it replaced.
 */
bytea *
cr_seen_or_base(const bytea *seen, int64 version, int64 base)
{
	Seen		s;

	if (seen != NULL)
		return (bytea *) seen;
	seen_read(NULL, &s);
	if (base > 0)
		s.top[region_of(base)] = base;
	if (version > 0)
		s.top[region_of(version)] = Max(s.top[region_of(version)], version);
	return seen_write(&s);
}

/* whether a row that has seen seen has seen the write at version */
bool
cr_seen_covers(const bytea *seen, int64 version)
{
	Seen		s;

	seen_read(seen, &s);
	return seen_covers(&s, version);
}
