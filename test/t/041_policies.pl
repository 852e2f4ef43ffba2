# Conflict policies decide conflicts the same way in every region.
#
#   last_writer_wins with a path  between two rows the higher value of the
#       path column wins (NULL loses to any value, equal values fall back
#       to the version); a delete wins against a concurrent insert or
#       update, whatever the versions (as in Cosmos DB);
#   manual  decided like last_writer_wins, and every conflict waits in the
#       feed (resolution pending, resolved_at NULL);
#   custom  a resolver, called once per conflict in the arbiter (the first
#       write region, a), with the write that arrived there as incoming and
#       the row a held as existing (a NULL row for a write that deleted the
#       key); what it returns becomes a new write of a, which replaces what
#       the other regions held meanwhile (by version); a resolver that
#       fails leaves the conflict decided by version and records the error
#       in a's feed; it runs as the table owner.
#
# Every scenario pauses all six directed links (partition_regions), makes
# its writes one statement after another (each commits before the next, so
# a later statement carries a higher version, which is asserted), writes
# a mark row in every region and heals in a stated order: each step
# resumes some links and waits until the destination holds the source's
# mark (a stream is applied in commit order, so the mark comes last).
# The expected rows are stated literally; their versions are read back
# from the writing statements (RETURNING _cr_version).
#
# The ledger resolver (payments) merges like a max/union (keeps the row of
# the higher status rank, pending 0 < authorized 1 < captured 2 <
# refunded 3, with the sorted distinct union of the tags).  Every region
# must end with the oracle row of every key: the highest rank ever
# committed and the union of all tags, written by the arbiter after every
# write of the round, whatever the order in which the links heal.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @all = make_group(qw(a b c));
my %node = map { ($_->name => $_) } @all;
my @NAMES = qw(a b c);

sub sql
{
	my ($r, $query) = @_;
	return $node{$r}->safe_psql('postgres', $query);
}

# Tombstones stay for the whole test (they are purged once every region
# has announced it applied past them), so that deletes can be checked.
for my $r (@NAMES)
{
	sql($r, "ALTER SYSTEM SET cosmosrep.stability_interval = '1h'");
	sql($r, 'SELECT pg_reload_conf()');
}

##########
# Schema, resolvers and policies, the same in every region
##########

my $SCHEMA = <<'SQL';
CREATE TABLE marks (src text, round int, PRIMARY KEY (src, round));

-- last_writer_wins on a path
CREATE TABLE items (id int PRIMARY KEY, v text, seq numeric);
CREATE TABLE events (id int PRIMARY KEY, v text, at timestamptz);

-- manual
CREATE TABLE notes (id int PRIMARY KEY, v text);

-- custom: the payments ledger
CREATE TABLE payments (id int PRIMARY KEY, status text NOT NULL,
                       tags text[] NOT NULL, last_touched_by text NOT NULL);
CREATE FUNCTION status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status WHEN 'pending' THEN 0 WHEN 'authorized' THEN 1
                       WHEN 'captured' THEN 2 WHEN 'refunded' THEN 3 END
$$;
-- (Apply, and so the resolver, runs with search_path = '': names are
-- qualified.)
-- Keeps the row of the higher status rank (a tie keeps the row with the
-- higher last_touched_by: never "the newer write", whose choice depends on
-- the order of arrival once merges are made), with the sorted distinct
-- union of both rows' tags and the kept row's last_touched_by.
-- A delete: when the newer write deleted the payment (incoming NULL,
-- is_tombstone), a payment already captured or refunded (rank >= 2) is
-- money that moved and is kept (existing is returned); a pending or
-- authorized one is deleted (NULL).  When the older write deleted it
-- (existing NULL), the newer row is kept as it is.
CREATE FUNCTION resolve_payment(incoming payments, existing payments,
                                is_tombstone boolean, conflicting payments[])
RETURNS payments LANGUAGE plpgsql AS $$
DECLARE
    kept public.payments;
BEGIN
    IF is_tombstone THEN
        IF public.status_rank(existing.status) >= 2 THEN
            RETURN existing;
        END IF;
        RETURN NULL;
    END IF;
    IF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    IF public.status_rank(existing.status) > public.status_rank(incoming.status)
       OR (existing.status = incoming.status
           AND existing.last_touched_by COLLATE "C" > incoming.last_touched_by COLLATE "C") THEN
        kept := existing;
    ELSE
        kept := incoming;
    END IF;
    kept.tags := ARRAY(SELECT DISTINCT t COLLATE "C" FROM unnest(incoming.tags || existing.tags) t
                        ORDER BY 1);
    RETURN kept;
END
$$;

-- custom: resolvers that fail
CREATE TABLE fails (id int PRIMARY KEY, v text);
CREATE FUNCTION resolve_fails(incoming fails, existing fails,
                              is_tombstone boolean, conflicting fails[])
RETURNS fails LANGUAGE plpgsql AS $$
BEGIN
    CASE coalesce(incoming.id, existing.id)
    WHEN 1 THEN
        -- with the rows of the key that wait in the feed
        RAISE EXCEPTION 'resolver refuses payment % (waiting: %)', incoming.id,
            coalesce((SELECT string_agg(c.v, ',') FROM unnest(conflicting) c), 'none');
    WHEN 2 THEN
        incoming.id := 1002;
        RETURN incoming;
    WHEN 3 THEN
        RETURN NULL;
    ELSE
        RETURN incoming;
    END CASE;
END
$$;

-- custom: a resolver of a table owned by a role that is no superuser
CREATE ROLE owner1 NOLOGIN;
CREATE TABLE secret (x int);
INSERT INTO secret VALUES (42);
CREATE TABLE secured (id int PRIMARY KEY, v text);
ALTER TABLE secured OWNER TO owner1;
CREATE FUNCTION resolve_secured(incoming secured, existing secured,
                                is_tombstone boolean, conflicting secured[])
RETURNS secured LANGUAGE plpgsql SECURITY INVOKER AS $$
BEGIN
    PERFORM count(*) FROM public.secret;
    RETURN incoming;
END
$$;
ALTER FUNCTION resolve_secured(secured, secured, boolean, secured[]) OWNER TO owner1;
SQL

sql($_, $SCHEMA) for @NAMES;
sql('a', q{
	SELECT cosmosrep.enable_table('marks');
	SELECT cosmosrep.enable_table('items', path => 'seq');
	SELECT cosmosrep.enable_table('events', path => 'at');
	SELECT cosmosrep.enable_table('notes', policy => 'manual');
	SELECT cosmosrep.enable_table('payments', policy => 'custom', resolver => 'resolve_payment');
	SELECT cosmosrep.enable_table('fails');
	SELECT cosmosrep.alter_table_policy('fails', 'custom', resolver => 'resolve_fails');
	SET ROLE owner1;
	SELECT cosmosrep.enable_table('secured', policy => 'custom', resolver => 'resolve_secured');
});
my $POLICIES = join("\n",
	'events|last_writer_wins|at|',
	'fails|custom||resolve_fails(fails,fails,boolean,fails[])',
	'items|last_writer_wins|seq|',
	'marks|last_writer_wins||',
	'notes|manual||',
	'payments|custom||resolve_payment(payments,payments,boolean,payments[])',
	'secured|custom||resolve_secured(secured,secured,boolean,secured[])');
for my $r (@NAMES)
{
	is(wait_for_policies($node{$r}, $POLICIES), $POLICIES, "$r: every table has its declared policy")
	  or die "the tables are not multi-region in $r";
}

##########
# Writes, partitions and heals
##########

# The versions of the round's statements, in order.
my @stmt_versions;

# Run an INSERT or UPDATE of one row in region $r; its version.
sub put
{
	my ($r, $query) = @_;
	my $v = sql($r, "$query RETURNING _cr_version");
	die "\"$query\" in $r wrote no single row: $v" unless $v =~ /^\d+$/;
	push @stmt_versions, [ $v, $v ];
	return $v;
}

# Run a DELETE of row $id of $table in region $r between two versions of
# the region's clock; the delete's version lies strictly between them.
sub del
{
	my ($r, $table, $id) = @_;
	my @out = split /\n/, sql($r,
		"SELECT cosmosrep.next_version(); DELETE FROM $table WHERE id = $id RETURNING id;"
		  . ' SELECT cosmosrep.next_version()');
	die "DELETE of $id from $table in $r: @out" unless @out == 3 && $out[1] eq $id;
	push @stmt_versions, [ $out[0] + 1, $out[2] - 1 ];
	return ($out[0], $out[2]);
}

sub versions_follow_statements
{
	my ($what) = @_;
	my @bad;
	for my $i (1 .. $#stmt_versions)
	{
		push @bad, "statement $i: $stmt_versions[$i][0] after $stmt_versions[$i-1][1]"
		  unless $stmt_versions[ $i - 1 ][1] < $stmt_versions[$i][0];
	}
	is(join('; ', @bad), '', "$what: each statement has a higher version than the one before");
	@stmt_versions = ();
	return;
}

sub partition
{
	partition_regions(\@all);
	@stmt_versions = ();
	return;
}

# Every region writes its mark for $round, then the links heal step by
# step: each step is a list of "dst<src" links, resumed together; the step
# ends when every dst holds the mark of its src.
sub heal
{
	my ($round, $what, @steps) = @_;
	sql($_, "INSERT INTO marks VALUES ('$_', $round)") for @NAMES;
	for my $step (@steps)
	{
		my @links = map { [ split /</ ] } @$step;
		sql($_->[0], "SELECT cosmosrep.resume_region('$_->[1]')") for @links;
		for my $link (@links)
		{
			my ($dst, $src) = @$link;
			$node{$dst}->poll_query_until('postgres',
				"SELECT count(*) = 1 FROM marks WHERE src = '$src' AND round = $round")
			  or die "$what: $dst did not apply the writes of $src";
		}
	}
	return;
}

# The conflicts region $r recorded for $table: one line per conflict,
# "key kind remote>local resolution" and what $extra adds.
sub conflicts
{
	my ($r, $table, $extra, $where) = @_;
	$extra = defined $extra ? " || ' ' || $extra" : '';
	$where = defined $where ? " AND $where" : '';
	return sql($r, qq{
		SELECT string_agg(format('%s %s %s>%s %s', key->>'id', kind, remote_region,
		                         local_region, resolution)$extra,
		                  E'\\n' ORDER BY (key->>'id')::int, conflict_id)
		  FROM cosmosrep.conflicts
		 WHERE table_name = '$table'::regclass$where});
}

# The heal order of the first two scenarios: a and b exchange their
# writes, then c applies a's, then b's, then a and b apply c's.
my @HEAL_ABC = ([ 'a<b', 'b<a' ], ['c<a'], ['c<b'], [ 'a<c', 'b<c' ]);

##########
# 1 and 2: last_writer_wins on a path, and manual
##########

sql('a', q{
	INSERT INTO items VALUES (1, 'pre', 0), (3, 'pre', 0), (4, 'pre', 0), (5, 'pre', 0),
	                         (6, 'pre', 0), (7, 'pre', 0), (8, 'pre', 0);
	INSERT INTO notes VALUES (1, 'pre'), (3, 'pre'), (4, 'pre'), (5, 'pre');
	INSERT INTO events VALUES (1, 'pre', '2030-01-01 00:00+00');
});
wait_for_same_table(\@all, 'items');
wait_for_same_table(\@all, 'events');
wait_for_same_table(\@all, 'notes');
partition();

my %v;    # versions of the writes: $v{"<table><id><region>"}

# the older write has the higher path value
$v{i1a} = put('a', "UPDATE items SET v = 'a', seq = 20 WHERE id = 1");
$v{i1b} = put('b', "UPDATE items SET v = 'b', seq = 10 WHERE id = 1");
$v{i2a} = put('a', "INSERT INTO items VALUES (2, 'a', 20)");
$v{i2b} = put('b', "INSERT INTO items VALUES (2, 'b', 10)");
# the newer write has a NULL path
$v{i3a} = put('a', "UPDATE items SET v = 'a', seq = 5 WHERE id = 3");
$v{i3b} = put('b', "UPDATE items SET v = 'b', seq = NULL WHERE id = 3");
# equal paths: the version decides
$v{i4a} = put('a', "UPDATE items SET v = 'a', seq = 10 WHERE id = 4");
$v{i4b} = put('b', "UPDATE items SET v = 'b', seq = 10.0 WHERE id = 4");
# an update with a high path against a newer delete: the delete wins
$v{i5a} = put('a', "UPDATE items SET v = 'a', seq = 99 WHERE id = 5");
del('b', 'items', 5);
# a delete against a newer update: the delete wins all the same
del('b', 'items', 6);
$v{i6a} = put('a', "UPDATE items SET v = 'a', seq = -1 WHERE id = 6");
# three regions: the oldest write has the highest path
$v{i7a} = put('a', "UPDATE items SET v = 'a', seq = 30 WHERE id = 7");
$v{i7b} = put('b', "UPDATE items SET v = 'b', seq = NULL WHERE id = 7");
$v{i7c} = put('c', "UPDATE items SET v = 'c', seq = 10 WHERE id = 7");
# two NULL paths: the version decides
$v{i8a} = put('a', "UPDATE items SET v = 'a', seq = NULL WHERE id = 8");
$v{i8b} = put('b', "UPDATE items SET v = 'b', seq = NULL WHERE id = 8");

# a timestamptz path: the older write has the later time
$v{e1a} = put('a', "UPDATE events SET v = 'a', at = '2030-01-01 12:00+00' WHERE id = 1");
$v{e1b} = put('b', "UPDATE events SET v = 'b', at = '2030-01-01 11:00+00' WHERE id = 1");

# manual: the same shapes
$v{n1a} = put('a', "UPDATE notes SET v = 'a' WHERE id = 1");
$v{n1b} = put('b', "UPDATE notes SET v = 'b' WHERE id = 1");
$v{n2a} = put('a', "INSERT INTO notes VALUES (2, 'a')");
$v{n2b} = put('b', "INSERT INTO notes VALUES (2, 'b')");
$v{n3a} = put('a', "UPDATE notes SET v = 'a' WHERE id = 3");
del('b', 'notes', 3);
del('b', 'notes', 4);
$v{n4a} = put('a', "UPDATE notes SET v = 'a' WHERE id = 4");
$v{n5a} = put('a', "UPDATE notes SET v = 'a' WHERE id = 5");
$v{n5b} = put('b', "UPDATE notes SET v = 'b' WHERE id = 5");
$v{n5c} = put('c', "UPDATE notes SET v = 'c' WHERE id = 5");

versions_follow_statements('path and manual');
heal(1, 'path and manual', @HEAL_ABC);

my $ITEMS = join("\n",
	"1|a|20|$v{i1a}",
	"2|a|20|$v{i2a}",
	"3|a|5|$v{i3a}",
	"4|b|10.0|$v{i4b}",
	"7|a|30|$v{i7a}",
	"8|b|NULL|$v{i8b}");
my $items_query = q{
	SELECT string_agg(concat_ws('|', id, v, coalesce(seq::text, 'NULL'), _cr_version),
	                  E'\n' ORDER BY id)
	  FROM items};
for my $r (@NAMES)
{
	is(sql($r, $items_query), $ITEMS,
		"$r: path: the higher path wins against a newer write (1, 2), NULL loses (3, 7),"
		  . ' equal or NULL paths go to the newer write (4, 8), a delete wins against an update'
		  . ' whether older or newer (5, 6 deleted), each with its own version');
}

for my $r (@NAMES)
{
	is(sql($r, q{SELECT concat_ws('|', id, v, extract(epoch FROM at)::bigint, _cr_version) FROM events}),
		"1|a|1893499200|$v{e1a}", "$r: path: on a timestamptz path, the later time wins");
}
is(join(' ', map { conflicts($_, 'events') } @NAMES),
	'1 update_update b>a local_kept 1 update_update a>b remote_applied 1 update_update b>c local_kept',
	'path: on a timestamptz path, each region records its conflict and resolution');

my $c = sub { conflicts($_[0], 'items', "coalesce(winner_row->>'v', '-')") };
is($c->('a'), join("\n",
		'1 update_update b>a local_kept a',
		'2 insert_exists b>a local_kept a',
		'3 update_update b>a local_kept a',
		'4 update_update b>a remote_applied b',
		'5 delete_updated b>a remote_applied -',
		'6 delete_updated b>a remote_applied -',
		'7 update_update b>a local_kept a',
		'7 update_update c>a local_kept a',
		'8 update_update b>a remote_applied b'),
	'a: path: the conflicts and their resolutions per key');
is($c->('b'), join("\n",
		'1 update_update a>b remote_applied a',
		'2 insert_exists a>b remote_applied a',
		'3 update_update a>b remote_applied a',
		'4 update_update a>b local_kept b',
		'5 update_deleted a>b local_kept -',
		'6 update_deleted a>b local_kept -',
		'7 update_update a>b remote_applied a',
		'7 update_update c>b local_kept a',
		'8 update_update a>b local_kept b'),
	'b: path: the conflicts and their resolutions per key');
is($c->('c'), join("\n",
		'1 update_update b>c local_kept a',
		'2 insert_exists b>c local_kept a',
		'3 update_update b>c local_kept a',
		'4 update_update b>c remote_applied b',
		'5 delete_updated b>c remote_applied -',
		'6 delete_updated b>c remote_applied -',
		'7 update_update a>c remote_applied a',
		'7 update_update b>c local_kept a',
		'8 update_update b>c remote_applied b'),
	'c (a\'s writes first, then b\'s): path: the conflicts and their resolutions per key');
for my $r (@NAMES)
{
	is(sql($r, q{
			SELECT string_agg(DISTINCT policy || ',' || (resolved_at IS NOT NULL)::text
			                  || ',' || coalesce(resolved_by, '-'), ' ')
			  FROM cosmosrep.conflicts WHERE table_name = 'items'::regclass}),
		'last_writer_wins,true,policy',
		"$r: path: every conflict is resolved by the policy at once");
}

my $NOTES = join("\n", "1|b|$v{n1b}", "2|b|$v{n2b}", "4|a|$v{n4a}", "5|c|$v{n5c}");
my $notes_query = q{
	SELECT string_agg(concat_ws('|', id, v, _cr_version), E'\n' ORDER BY id) FROM notes};
for my $r (@NAMES)
{
	is(sql($r, $notes_query), $NOTES,
		"$r: manual: every key holds the newer write, as last_writer_wins picks (3 deleted)");
}
$c = sub { conflicts($_[0], 'notes', "coalesce(winner_row->>'v', '-')") };
is($c->('a'), join("\n",
		'1 update_update b>a pending b',
		'2 insert_exists b>a pending b',
		'3 delete_updated b>a pending -',
		'4 delete_updated b>a pending a',
		'5 update_update b>a pending b',
		'5 update_update c>a pending c'),
	'a: manual: every conflict is pending, with the row held as winner');
is($c->('b'), join("\n",
		'1 update_update a>b pending b',
		'2 insert_exists a>b pending b',
		'3 update_deleted a>b pending -',
		'4 update_deleted a>b pending a',
		'5 update_update a>b pending b',
		'5 update_update c>b pending c'),
	'b: manual: every conflict is pending, with the row held as winner');
is($c->('c'), join("\n",
		'1 update_update b>c pending b',
		'2 insert_exists b>c pending b',
		'3 delete_updated b>c pending -',
		'4 delete_updated b>c pending a',
		'5 update_update a>c pending c',
		'5 update_update b>c pending c'),
	'c: manual: every conflict is pending, with the row held as winner');
for my $r (@NAMES)
{
	is(sql($r, q{
			SELECT count(*) || ',' || count(*) FILTER (WHERE policy = 'manual'
			         AND resolution = 'pending' AND resolved_at IS NULL AND resolved_by IS NULL
			         AND error IS NULL)
			  FROM cosmosrep.conflicts WHERE table_name = 'notes'::regclass}),
		'6,6', "$r: manual: all 6 conflicts wait in the feed, resolved_at NULL");
}

# replication goes on after manual conflicts
sql('c', "INSERT INTO notes VALUES (9, 'after'); UPDATE notes SET v = 'after' WHERE id = 1");
for my $r (@NAMES)
{
	ok(wait_for_value($node{$r},
			"SELECT string_agg(id || v, ',' ORDER BY id) FROM notes WHERE v = 'after'", '1after,9after'),
		"$r: manual: a later insert and update from c are applied");
}
is(sql('a', q{SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = 'notes'::regclass}),
	'6', 'a: manual: c\'s later update of a key in the feed, made after seeing it, is no conflict');

##########
# 3, 4 and 5: the ledger resolver between two regions, failing resolvers,
# a resolver without the privileges it needs
##########

sql('a', q{
	INSERT INTO payments SELECT i, 'pending', '{created}', 'init' FROM generate_series(1, 5) i;
	INSERT INTO fails VALUES (1, 'pre'), (2, 'pre'), (3, 'pre'), (4, 'pre');
	INSERT INTO secured VALUES (1, 'pre');
});
wait_for_same_table(\@all, $_) for qw(payments fails secured);
# the version of payment 3 before the partition: b's write replaces it
my $pre3 = sql('a', 'SELECT _cr_version FROM payments WHERE id = 3');
partition();

# 1: captured (older) against authorized (newer); 2: the reverse
$v{p1b} = put('b', "UPDATE payments SET status = 'captured', tags = '{created,settled}', last_touched_by = 'b' WHERE id = 1");
$v{p1a} = put('a', "UPDATE payments SET status = 'authorized', tags = '{riskok,created}', last_touched_by = 'a' WHERE id = 1");
$v{p2a} = put('a', "UPDATE payments SET status = 'authorized', tags = '{riskok,created}', last_touched_by = 'a' WHERE id = 2");
$v{p2b} = put('b', "UPDATE payments SET status = 'captured', tags = '{created,settled}', last_touched_by = 'b' WHERE id = 2");
# 3: the resolver returns the newer write itself
$v{p3a} = put('a', "UPDATE payments SET status = 'authorized', tags = '{created}', last_touched_by = 'a' WHERE id = 3");
$v{p3b} = put('b', "UPDATE payments SET status = 'captured', tags = '{created,settled}', last_touched_by = 'b' WHERE id = 3");
# 4: a newer delete of a captured payment; 5: of an authorized one
$v{p4a} = put('a', "UPDATE payments SET status = 'captured', tags = '{created,settled}', last_touched_by = 'a' WHERE id = 4");
my ($p4_before, $p4_after) = del('b', 'payments', 4);
$v{p5a} = put('a', "UPDATE payments SET status = 'authorized', tags = '{created}', last_touched_by = 'a' WHERE id = 5");
del('b', 'payments', 5);

# resolvers that fail: 1 raises, 2 returns another key, 3 returns NULL,
# 4 returns incoming
for my $id (1 .. 4)
{
	$v{"f${id}a"} = put('a', "UPDATE fails SET v = 'a' WHERE id = $id");
	$v{"f${id}b"} = put('b', "UPDATE fails SET v = 'b' WHERE id = $id");
}
# a resolver that reads a table its owner may not read
$v{s1a} = put('a', "UPDATE secured SET v = 'a' WHERE id = 1");
$v{s1b} = put('b', "UPDATE secured SET v = 'b' WHERE id = 1");

versions_follow_statements('ledger and failing resolvers');
heal(2, 'ledger and failing resolvers', @HEAL_ABC);
# the arbiter's resolutions travel after the marks
wait_for_same_table(\@all, $_) for qw(payments fails secured);

# the version of b's delete of payment 4
my $p4_delete = sql('b', q{
	SELECT version FROM cosmosrep.tombstones WHERE table_name = 'payments'::regclass AND key = '(4)'});
ok($p4_before < $p4_delete && $p4_delete < $p4_after && $p4_delete > $v{p4a},
	'b: the delete of payment 4 left its tombstone, newer than a\'s capture');

is(join(',', map { sql($_, 'SELECT cosmosrep.arbiter()') } @NAMES), 'a,a,a',
	'every region names a, the first write region, as the arbiter');

# Each conflict is resolved in a alone: the resolver gets b's write as
# incoming and a's as existing, and its row is a new write of a, above
# both versions, with a's row as base (for unchanged TOASTed values).
my $payments_query = q{
	SELECT string_agg(concat_ws('|', id, status, tags, last_touched_by,
	                            CASE WHEN _cr_version > %s THEN 'newer' ELSE _cr_version::text END,
	                            _cr_base, _cr_region),
	                  E'\n' ORDER BY id)
	  FROM payments WHERE id <= 5};
my $newest = (sort { $b <=> $a } map { $v{$_} } grep { /^p/ } keys %v)[0];
$newest = $p4_delete if $p4_delete > $newest;
my $PAYMENTS = join("\n",
	"1|captured|{created,riskok,settled}|b|newer|$v{p1a}|1",
	"2|captured|{created,riskok,settled}|b|newer|$v{p2a}|1",
	"3|captured|{created,settled}|b|newer|$v{p3a}|1",
	"4|captured|{created,settled}|a|newer|$v{p4a}|1");
for my $r (@NAMES)
{
	is(sql($r, sprintf($payments_query, $newest)), $PAYMENTS,
		"$r: ledger: the arbiter's resolutions: authorized and captured merge into captured"
		  . ' with both tags (1, 2), a resolver that returns one of the writes writes it again'
		  . ' (3), a delete does not remove a captured payment (4) but removes an authorized'
		  . ' one (5); each a new write of a, newer than every write of the round');
}

$c = sub {
	conflicts($_[0], 'payments',
		"coalesce(error, CASE WHEN winner_row IS NULL THEN '-' ELSE concat_ws(',',"
		  . " winner_row->>'status', winner_row->>'tags', winner_row->>'last_touched_by') END)");
};
is($c->('a'), join("\n",
		'1 update_update b>a merged captured,["created", "riskok", "settled"],b',
		'2 update_update b>a merged captured,["created", "riskok", "settled"],b',
		'3 update_update b>a merged captured,["created", "settled"],b',
		'4 delete_updated b>a merged captured,["created", "settled"],a',
		'5 delete_updated b>a merged -'),
	'a: ledger: the arbiter records each conflict once, with the row it wrote as winner');
is($c->('b') . '|' . $c->('c'), '|',
	'b and c: ledger: the regions that are not the arbiter record no conflict');

# failing resolvers: in the arbiter a, 1 raises and 2 returns another key:
# the conflict stays decided by version (b's newer write, as b and c hold
# it) and waits in a's feed; 3 (NULL) deletes at a new version of a; 4
# returns incoming, b's row, which a writes anew
my $FAILS = "1|b|$v{f1b}|2\n2|b|$v{f2b}|2\n4|b|newer|1";
my $fails_query = sprintf(q{
	SELECT string_agg(concat_ws('|', id, v, CASE WHEN _cr_version > %s THEN 'newer'
	                                            ELSE _cr_version::text END, _cr_region),
	                  E'\n' ORDER BY id) FROM fails}, $v{f4b});
my $f3 = sql('a', q{SELECT version FROM cosmosrep.tombstones
                    WHERE table_name = 'fails'::regclass AND key = '(3)'});
for my $r (@NAMES)
{
	is(sql($r, $fails_query), $FAILS,
		"$r: failing resolver: 1 (raises) and 2 (another key) hold the newer write, as every"
		  . ' region decided it, 3 (NULL) is deleted, 4 written anew by the arbiter');
	is(sql($r, q{SELECT string_agg(key || ' ' || version, ',') FROM cosmosrep.tombstones
	              WHERE table_name = 'fails'::regclass}),
		"(3) $f3", "$r: failing resolver: NULL deletes 3 at the arbiter's new version");
}
ok($f3 > $v{f3b}, 'the arbiter deleted 3 at a version newer than both writes');
is(conflicts('a', 'fails',
		"coalesce(error, '-') || ' ' || (resolved_at IS NULL)::text || ' ' || coalesce(winner_row->>'v', '-')"),
	join("\n",
		"1 update_update b>a error resolver refuses payment 1 (waiting: none) true -",
		"2 update_update b>a error resolver returned a row with another primary key true -",
		"3 update_update b>a merged - false -",
		"4 update_update b>a merged - false b"),
	'a: failing resolver: errors are recorded with their message and wait in the arbiter\'s feed');
is(conflicts('b', 'fails') . '|' . conflicts('c', 'fails'), '|',
	'b and c: failing resolver: nothing recorded outside the arbiter');

# a resolver runs as the table owner, who may not read secret
is(conflicts('a', 'secured', "coalesce(error, '-')"),
	'1 update_update b>a error permission denied for table secret',
	"a: a resolver of owner1's table cannot read a table owner1 may not read");
for my $r (@NAMES)
{
	is(sql($r, q{SELECT v || '|' || _cr_version FROM secured}), "b|$v{s1b}",
		"$r: the conflict of the failed resolution stays decided by version");
}

# replication goes on: later changes from the regions of the failed
# resolutions; b's next update of 1, made on the row every region holds,
# is no conflict
sql('b', "UPDATE fails SET v = 'b again' WHERE id = 1;"
	  . " INSERT INTO fails VALUES (10, 'b later'); UPDATE fails SET v = 'b later' WHERE id = 4");
sql('a', "INSERT INTO fails VALUES (11, 'a later'); INSERT INTO secured VALUES (2, 'a later')");
for my $r (@NAMES)
{
	ok(wait_for_value($node{$r}, q{
			SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM fails WHERE v LIKE '% later'},
			'4:b later,10:b later,11:a later'),
		"$r: failing resolver: later changes of a and b are applied");
	ok(wait_for_value($node{$r}, q{SELECT count(*) FROM secured WHERE v = 'a later'}, '1'),
		"$r: a later insert into owner1's table is applied");
	is(sql($r, 'SELECT v FROM fails WHERE id = 1'), 'b again',
		"$r: failing resolver: b's next update of 1 is applied everywhere");
}
is(conflicts('a', 'fails', "(resolved_at IS NULL)::text", "key->>'id' = '1'"),
	'1 update_update b>a error true',
	'a: failing resolver: the failed conflict of 1 still waits in the feed, and b\'s next'
	  . ' update, made after it, is no conflict');
ok_all_streaming(\@all, 'failed resolutions do not stop replication');

##########
# 3: the ledger resolver converges in three regions, whatever the heal
# order
##########

my %RANK = (pending => 0, authorized => 1, captured => 2, refunded => 3);
my @STATUSES = qw(authorized captured refunded);
my @PERMS = ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]);
my @ALL_LINKS = map { my $d = $_; map { "$d<$_" } grep { $_ ne $d } @NAMES } @NAMES;
my @HEALS = (
	[ 'all at once', [@ALL_LINKS] ],
	[ 'a<b a<c b<c b<a c<a c<b, one at a time', map { [$_] } qw(a<b a<c b<c b<a c<a c<b) ],
	[ 'c<b c<a b<a b<c a<c a<b, one at a time', map { [$_] } qw(c<b c<a b<a b<c a<c a<b) ],
	[ 'a<b b<a together, then c<b c<a a<c b<c', [qw(a<b b<a)], map { [$_] } qw(c<b c<a a<c b<c) ]);

my $round = 2;
for my $heal (@HEALS)
{
	my ($how, @steps) = @$heal;
	my $first = 100 * ++$round;
	my @keys;    # { id, writes => [ [region, status, tags, version] ] }
	my $what = "ledger round $round, heal $how";

	sql('a', "INSERT INTO payments SELECT i, 'pending', '{created}', 'init'"
		  . " FROM generate_series($first + 1, $first + 7) i");
	for my $r (@NAMES)
	{
		$node{$r}->poll_query_until('postgres',
			"SELECT count(*) = 7 FROM payments WHERE id > $first") or die;
	}
	partition();

	# six keys: every assignment of the three statuses to a, b and c, each
	# written in another order of the regions
	for my $i (0 .. 5)
	{
		my $id = $first + $i + 1;
		my %status = map { ($NAMES[$_] => $STATUSES[ $PERMS[$i][$_] ]) } 0 .. 2;
		my @order = map { $NAMES[ ($_ + $i + $round) % 3 ] } 0 .. 2;
		@order = reverse @order if $i % 2;
		my @writes;
		for my $r (@order)
		{
			my @tags = ($status{$r}, "from$r", 'created', "from$r");
			my $array = 'ARRAY[' . join(',', map { "'$_'" } @tags) . ']';
			push @writes, [ $r, $status{$r}, \@tags,
				put($r, "UPDATE payments SET status = '$status{$r}', tags = $array,"
					  . " last_touched_by = '$r' WHERE id = $id") ];
		}
		push @keys, { id => $id, writes => \@writes,
			what => join(' ', map { "$_->[0]:$_->[1]" } @writes) };
	}

	# the seventh: b refunds, a authorizes then captures (a moves its own
	# row up, before it has seen b's refund); within the resolver contract,
	# so it must end refunded, with all three tags, in every region
	{
		my $id = $first + 7;
		my @writes;
		push @writes, [ 'b', 'refunded', ['refund'],
			put('b', "UPDATE payments SET status = 'refunded', tags = '{refund}',"
				  . " last_touched_by = 'b' WHERE id = $id") ];
		push @writes, [ 'a', 'authorized', ['auth'],
			put('a', "UPDATE payments SET status = 'authorized', tags = '{auth}',"
				  . " last_touched_by = 'a' WHERE id = $id") ];
		push @writes, [ 'a', 'captured', [ 'auth', 'capture' ],
			put('a', "UPDATE payments SET status = 'captured', tags = '{auth,capture}',"
				  . " last_touched_by = 'a' WHERE id = $id") ];
		push @keys, { id => $id, writes => \@writes,
			what => 'b:refunded a:authorized a:captured (a moves its row up twice)' };
	}

	versions_follow_statements($what);
	heal($round, $what, @steps);
	wait_for_same_table(\@all, 'payments');

	my %base;
	for my $key (@keys)
	{
		my @w = @{ $key->{writes} };
		my ($top) = sort { $RANK{ $b->[1] } <=> $RANK{ $a->[1] } || $b->[0] cmp $a->[0] } @w;
		my %tags = map { ($_ => 1) } map { @{ $_->[2] } } @w;
		my ($version) = sort { $b <=> $a } map { $_->[3] } @w;
		my $oracle = join('|', $key->{id}, $top->[1], '{' . join(',', sort keys %tags) . '}',
			$top->[0], 'newer', 1);
		for my $r (@NAMES)
		{
			my $got = sql($r, "SELECT concat_ws('|', id, status, tags, last_touched_by,"
				  . " CASE WHEN _cr_version > $version THEN 'newer' ELSE _cr_version::text END,"
				  . " _cr_region, _cr_base) FROM payments WHERE id = $key->{id}");
			$got =~ s/\|(\d*)$//;
			$base{ $key->{id} }{$r} = $1;
			is($got, $oracle, "$r: $what: payment $key->{id} ($key->{what}) holds the highest"
				  . ' status and the union of the tags, written by the arbiter a after every write')
			  or diag("the writes: "
				  . join(', ', map { "$_->[0] $_->[1] at $_->[3]" } @w)
				  . "\nthe conflicts of $key->{id} in $r:\n"
				  . sql($r, qq{
					SELECT string_agg(concat_ws(' ', kind, remote_region || '>' || local_region,
					                            'local', local_version, 'remote', remote_version,
					                            resolution, winner_row->>'status'),
					                  E'\\n' ORDER BY conflict_id)
					  FROM cosmosrep.conflicts
					 WHERE table_name = 'payments'::regclass AND key->>'id' = '$key->{id}'}));
		}
	}
	# nor does its base
	for my $id (sort keys %base)
	{
		my %b = %{ $base{$id} };
		is(scalar(keys %{ { reverse %b } }), 1,
			"$what: payment $id has the same _cr_base in every region")
		  or diag(join(', ', map { "$_=$b{$_}" } @NAMES));
	}
	is(sql($_, "SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = 'payments'::regclass"
		  . " AND (key->>'id')::int > $first AND resolution = 'error'"), '0',
		"$_: $what: no resolution failed") for @NAMES;
}

ok_all_streaming(\@all, 'every policy and heal order leaves replication streaming');

$_->stop for @all;
done_testing();
