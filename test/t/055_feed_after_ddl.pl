# Entries of the conflicts feed that were pending when their table changed
# shape, resolved after the change, in three regions.  Conflicting writes
# of a and b to a table under the manual policy leave entries in the feed;
# then region a changes the table with replicated DDL (ADD COLUMN with a
# default, DROP COLUMN of a column the entries' rows have, RENAME COLUMN,
# ALTER COLUMN TYPE int to bigint and enum to text, ADD COLUMN then SET
# DEFAULT, RENAME TABLE), and regions b and c, which replayed the changes,
# resolve every entry in each of the ways the feed offers: keeping the
# existing or the incoming version, supplying a row in the new shape or in
# the old one, applying it again (under the manual policy, then through a
# resolver written for the new shape).  The rows of the old shape are
# written as rows of the new one: a value goes to its column by attribute
# (renamed, or read as the new type from its text), the dropped column's
# value is ignored, a column added since gets what the rows of that time
# got (the ADD COLUMN's default while PostgreSQL keeps it, the default
# now after a rewrite of the table) unless a supplied row gives it a
# value.  Every region ends with the same rows and resolves its own
# entries, and replication streams without errors.  A stored value that
# can no longer be read (its type was dropped since) is refused with its
# message, and the entry can still be resolved with a supplied row.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b c));
my ($ra, $rb, $rc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TYPE mood AS ENUM ('calm', 'cross');
		CREATE TABLE items (id int PRIMARY KEY, qty int, note text, gone text, mood mood)});
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('items', policy => 'manual')");
$_->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die $_->name . ' did not enable items'
  for ($rb, $rc);
$ra->safe_psql('postgres',
	"INSERT INTO items SELECT g, 0, 'start', 'start' FROM generate_series(1, 7) g");
wait_for_same_table(\@nodes, 'items');

# Conflicts: a and b update every row while apart (b's writes are the
# newer ones); row 6 also gets a value of the enum.
partition_regions(\@nodes);
$ra->safe_psql('postgres', q{
	UPDATE items SET qty = 10 + id, note = 'a' || id, gone = 'ga',
	                 mood = CASE WHEN id = 6 THEN 'calm'::mood END});
$rb->safe_psql('postgres', q{
	UPDATE items SET qty = 20 + id, note = 'b' || id, gone = 'gb',
	                 mood = CASE WHEN id = 6 THEN 'cross'::mood END});
heal_regions(\@nodes);
ok_all_streaming(\@nodes, 'streams after the conflicting writes');
wait_for_same_table(\@nodes, 'items');

my $pending = q{
	SELECT string_agg(key->>'id', ',' ORDER BY (key->>'id')::int)
	  FROM cosmosrep.conflict_feed WHERE resolution = 'pending'};
is($_->safe_psql('postgres', $pending), '1,2,3,4,5,6,7',
	$_->name . ': every conflict waits in the feed, pending')
  for ($ra, $rb);

# The schema changes, made in a with every region up and streaming.
$ra->safe_psql('postgres', $_) for (
	'ALTER TABLE items ADD COLUMN extra int DEFAULT 7',
	'ALTER TABLE items DROP COLUMN gone',
	'ALTER TABLE items RENAME COLUMN note TO memo',
	'ALTER TABLE items ALTER COLUMN qty TYPE bigint',
	'ALTER TABLE items ALTER COLUMN mood TYPE text',
	"ALTER TABLE items ADD COLUMN tag text DEFAULT 'at add'",
	"ALTER TABLE items ALTER COLUMN tag SET DEFAULT 'later'",
	'ALTER TABLE items RENAME TO goods');
my $columns = q{
	SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
	  FROM pg_attribute
	 WHERE attrelid = to_regclass('goods') AND attnum > 0 AND NOT attisdropped
	   AND attname NOT LIKE '\_cr\_%'};
for my $node (@nodes)
{
	ok(wait_for_value($node, $columns,
			'id integer, qty bigint, memo text, mood text, extra integer, tag text'),
		$node->name . ': the table has the new shape');
}
ok_all_streaming(\@nodes, 'streams after the schema changes');
wait_for_same_table(\@nodes, 'goods');

# the enum's values stored in the feed can no longer be read once it is gone
$_->safe_psql('postgres', 'DROP TYPE mood') for @nodes;

is($_->safe_psql('postgres', $pending), '1,2,3,4,5,6,7',
	$_->name . ': the entries still wait in the feed after the changes')
  for ($ra, $rb);
is($rb->safe_psql('postgres', q{
	SELECT local_row->>'note' || ' ' || (remote_row->>'qty') || ' ' || (remote_row ? 'gone')
	  FROM cosmosrep.conflict_feed WHERE key->>'id' = '1'}),
	'b1 11 true', 'the entries show their rows in the shape they were recorded with');

# entry($node, $id): the conflict id, local and remote versions of the
# entry of key $id in $node's feed
sub entry
{
	my ($node, $id) = @_;
	return split /\|/, $node->safe_psql('postgres',
		"SELECT conflict_id, local_version, remote_version
		   FROM cosmosrep.conflict_feed WHERE key->>'id' = '$id'");
}

# key 1, in b: keep the existing row (b's own version)
my ($id1, $local1, $remote1) = entry($rb, 1);
$rb->safe_psql('postgres', "SELECT cosmosrep.resolve_conflict($id1, $local1)");

# key 2, in b: keep the incoming row (a's version)
my ($id2, $local2, $remote2) = entry($rb, 2);
$rb->safe_psql('postgres', "SELECT cosmosrep.resolve_conflict($id2, $remote2)");

# key 3, in b: a row in the new shape, with a value only bigint holds
my ($id3) = entry($rb, 3);
$rb->safe_psql('postgres', qq{SELECT cosmosrep.resolve_conflict_with_row($id3,
	'{"id": 3, "qty": 5000000000, "memo": "new shape", "mood": "glad", "extra": 9, "tag": "given"}')});

# key 4, in a region that has an entry of it other than a: a row in the
# old shape (old column names, the dropped column, no added column)
my ($resolver4) = grep { $_->safe_psql('postgres',
		"SELECT count(*) FROM cosmosrep.conflict_feed WHERE key->>'id' = '4'") eq '1' }
  ($rc, $rb);
my ($id4) = entry($resolver4, 4);
$resolver4->safe_psql('postgres', qq{SELECT cosmosrep.resolve_conflict_with_row($id4,
	'{"id": 4, "qty": 44, "note": "old shape", "gone": "ignored"}')});

# key 5, in b: apply the entry again (under manual, the incoming write)
my ($id5) = entry($rb, 5);
is($rb->safe_psql('postgres', "SELECT cosmosrep.reapply_conflict($id5)"),
	'remote_applied', 'applying an entry of the old shape again writes its incoming row');

# key 6, in b: its rows hold a value of the dropped enum
my ($id6, $local6) = entry($rb, 6);
my ($ret, $out, $err) = $rb->psql('postgres',
	"SELECT cosmosrep.resolve_conflict($id6, $local6)");
like($err, qr/ERROR:  conflict $id6 holds a value of column "mood" of a type that no longer exists\n(?:CONTEXT:[^\n]*\n)?HINT:  Supply the row with cosmosrep.resolve_conflict_with_row, or accept what the regions hold with cosmosrep.discard_conflict\./,
	'keeping a row whose value can no longer be read is refused');
is($rb->safe_psql('postgres', "SELECT count(*) FROM cosmosrep.conflict_feed WHERE conflict_id = $id6"),
	'1', 'the refused entry still waits in the feed');
$rb->safe_psql('postgres', qq{SELECT cosmosrep.resolve_conflict_with_row($id6,
	'{"id": 6, "qty": 66, "memo": "supplied", "mood": "calm"}')});

# key 7, in b, under a resolver written for the new shape: applied again,
# the entry's two rows reach it as rows of the new shape
$_->safe_psql('postgres', q{
	CREATE FUNCTION add_up(incoming goods, existing goods, is_tombstone boolean,
	                       conflicting goods[])
	RETURNS goods LANGUAGE plpgsql AS $$
	BEGIN
	    incoming.qty := incoming.qty + existing.qty;
	    incoming.memo := incoming.memo || '+' || existing.memo;
	    RETURN incoming;
	END
	$$}) for @nodes;
$ra->safe_psql('postgres',
	"SELECT cosmosrep.alter_table_policy('goods', 'custom', resolver => 'add_up')");
wait_for_policies($rb, 'goods|custom||add_up(goods,goods,boolean,goods[])');
my ($id7) = entry($rb, 7);
is($rb->safe_psql('postgres', "SELECT cosmosrep.reapply_conflict($id7)"),
	'merged', 'a resolver applies an entry of the old shape again');

for my $node (@nodes)
{
	ok(wait_for_value($node, 'SELECT count(*) FROM cosmosrep.conflict_feed', '0'),
		$node->name . ': every entry is resolved in this region too');
}
ok_all_streaming(\@nodes, 'streams after the resolutions');
wait_for_same_table(\@nodes, 'goods');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', q{
		SELECT string_agg(concat_ws(':', id, qty, memo, coalesce(mood, '-'), extra, tag), ' ' ORDER BY id)
		  FROM goods}),
		'1:21:b1:-:7:at add 2:12:a2:-:7:at add 3:5000000000:new shape:glad:9:given '
		  . '4:44:old shape:-:7:at add 5:15:a5:-:7:at add 6:66:supplied:calm:7:at add '
		  . '7:44:a7+b7:-:7:at add',
		$node->name . ': every key holds what was chosen, in the new shape');
}
is(join(',', map { $rb->safe_psql('postgres',
			"SELECT resolution FROM cosmosrep.conflicts WHERE conflict_id = $_") } ($id1, $id2, $id3, $id5, $id6, $id7)),
	'local_kept,remote_applied,merged,remote_applied,merged,merged',
	'each entry is resolved the way it was chosen');
is($resolver4->safe_psql('postgres', "SELECT resolution FROM cosmosrep.conflicts WHERE conflict_id = $id4"),
	'merged', 'the entry resolved with a row of the old shape is resolved with it');
is($rb->safe_psql('postgres', q{
	SELECT count(*) FROM goods
	 WHERE _cr_version > (SELECT max(greatest(local_version, remote_version))
	                        FROM cosmosrep.conflicts)}),
	'7', 'each resolution is a new write, newer than the conflict it resolves');

done_testing();
