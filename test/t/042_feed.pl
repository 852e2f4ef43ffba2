# The conflicts feed end to end, in three regions: under the manual
# policy every conflict waits, pending, in every region's feed while the
# regions hold the row last-writer-wins picked; the application resolves
# an entry in one region (keeping a version, supplying a row, or accepting
# what is held) and every region ends with the resolution and marks its
# own entries resolved.  An entry a resolver failed on is applied again
# once the resolver is fixed.  Every refusal of the feed functions, with
# its exact message, changes nothing.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b c));
my ($ra, $rb, $rc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres',
		'CREATE TABLE orders (id int PRIMARY KEY, qty int, note text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('orders', policy => 'manual')");
$_->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  for ($rb, $rc);
$ra->safe_psql('postgres', "INSERT INTO orders SELECT g, 0, 'start' FROM generate_series(1, 5) g");
wait_for_same_table(\@nodes, 'orders');

sub heal
{
	heal_regions(\@nodes);
	ok_all_streaming(\@nodes, 'streams after the heal');
	wait_for_same_table(\@nodes, 'orders');
	return;
}

sub rows
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(id || ':' || qty || ':' || note, ' ' ORDER BY id) FROM orders");
}

sub feed
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(key->>'id' || ' ' || kind || ' ' || resolution, ', ' ORDER BY key->>'id', conflict_id)
		   FROM cosmosrep.conflict_feed");
}

# b's writes are the newer ones: each statement commits before the next
partition_regions(\@nodes);
$ra->safe_psql('postgres', "UPDATE orders SET qty = 10, note = 'a' WHERE id IN (1, 2, 3, 4)");
$rb->safe_psql('postgres', "UPDATE orders SET qty = 20, note = 'b' WHERE id IN (1, 2, 3, 4)");
heal();

is(rows($_), '1:20:b 2:20:b 3:20:b 4:20:b 5:0:start',
	$_->name . ': manual holds the row last-writer-wins picks')
  for @nodes;
is(feed($_), '1 update_update pending, 2 update_update pending, '
	  . '3 update_update pending, 4 update_update pending',
	$_->name . ': every conflict waits in the feed, pending')
  for ($ra, $rb);
is($ra->safe_psql('postgres', q{
	SELECT bool_and(resolved_at IS NULL AND resolved_by IS NULL
	                AND winner_row->>'note' = 'b')
	  FROM cosmosrep.conflict_feed}),
	't', 'a pending entry shows the row held as its winner, and no resolution time');

my $id1 = $ra->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE key->>'id' = '1'");
my ($local1, $remote1) = split /\|/, $ra->safe_psql('postgres',
	"SELECT local_version, remote_version FROM cosmosrep.conflict_feed WHERE key->>'id' = '1'");

# Refusals, each with its exact message, and nothing changed by them
my ($ret, $out, $err) = $ra->psql('postgres',
	"SELECT cosmosrep.resolve_conflict($id1, 42)");
like($err, qr/ERROR:  version 42 is not a version of conflict $id1\nHINT:  Keep version $local1 or $remote1\./,
	'keeping a version the entry does not have is refused');
($ret, $out, $err) = $ra->psql('postgres', 'SELECT cosmosrep.resolve_conflict(999999, 1)');
like($err, qr/ERROR:  conflict 999999 does not exist/, 'an unknown entry is refused');
($ret, $out, $err) = $ra->psql('postgres',
	"SELECT cosmosrep.resolve_conflict_with_row($id1, '{\"id\": 2, \"qty\": 5}')");
like($err, qr/ERROR:  the row has another primary key than conflict $id1\nHINT:  Supply a row with the key of the conflict\./,
	'a row with another key is refused');

$ra->safe_psql('postgres', 'CREATE ROLE clerk; GRANT USAGE ON SCHEMA cosmosrep TO clerk');
($ret, $out, $err) = $ra->psql('postgres',
	"SET ROLE clerk; SELECT cosmosrep.discard_conflict($id1)");
like($err, qr/ERROR:  conflict $id1 does not exist/,
	'an entry of a table the user may not read does not exist for them');
$ra->safe_psql('postgres', 'GRANT SELECT ON orders TO clerk');
($ret, $out, $err) = $ra->psql('postgres',
	"SET ROLE clerk; SELECT cosmosrep.discard_conflict($id1)");
like($err, qr/ERROR:  permission denied for table orders/,
	'a user who may read the table but not change it cannot resolve');
is(feed($ra), '1 update_update pending, 2 update_update pending, '
	  . '3 update_update pending, 4 update_update pending',
	'the refused calls resolved nothing');

# keep a's version of key 1, in region a
$ra->safe_psql('postgres', "SELECT cosmosrep.resolve_conflict($id1, $local1)");
wait_for_value($_, "SELECT qty || note FROM orders WHERE id = 1", '10a')
  for @nodes;
is(rows($_), '1:10:a 2:20:b 3:20:b 4:20:b 5:0:start',
	$_->name . ': the kept version is the row of key 1 in every region')
  for @nodes;
is($ra->safe_psql('postgres',
		"SELECT resolution || ' ' || resolved_by || ' ' || (winner_row->>'note')
		   FROM cosmosrep.conflicts WHERE conflict_id = $id1"),
	'local_kept postgres a', 'the entry is resolved, by whom, with the row written');
for my $node ($rb, $rc)
{
	ok(wait_for_value($node,
			"SELECT string_agg(resolution || ' ' || resolved_by, ',')
			   FROM cosmosrep.conflicts WHERE key->>'id' = '1'",
			'local_kept postgres in region a'),
		$node->name . ': its entry of the same conflict is resolved too');
}
($ret, $out, $err) = $ra->psql('postgres', "SELECT cosmosrep.resolve_conflict($id1, $local1)");
like($err, qr/ERROR:  conflict $id1 is not in the feed\nDETAIL:  It was resolved by postgres\./,
	'an entry cannot be resolved twice');

# supply a row for key 2, in region b
my $id2 = $rb->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE key->>'id' = '2'");
$rb->safe_psql('postgres',
	"SELECT cosmosrep.resolve_conflict_with_row($id2, '{\"id\": 2, \"qty\": 30, \"note\": \"merged\"}')");
wait_for_value($_, "SELECT qty || note FROM orders WHERE id = 2", '30merged')
  for @nodes;
wait_for_same_table(\@nodes, 'orders');
is(rows($_), '1:10:a 2:30:merged 3:20:b 4:20:b 5:0:start',
	$_->name . ': the supplied row is the row of key 2 in every region')
  for @nodes;

# accept what is held for key 3, in region c
my $id3 = $rc->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE key->>'id' = '3'");
my %v3 = map { ($_->name => $_->safe_psql('postgres', 'SELECT _cr_version FROM orders WHERE id = 3')) } @nodes;
$rc->safe_psql('postgres', "SELECT cosmosrep.discard_conflict($id3)");
for my $node (@nodes)
{
	ok(wait_for_value($node, "SELECT count(*) FROM cosmosrep.conflict_feed WHERE key->>'id' = '3'", '0'),
		$node->name . ': accepting what is held resolves key 3 everywhere');
}
is(rows($rc), '1:10:a 2:30:merged 3:20:b 4:20:b 5:0:start', 'and writes nothing');
is($_->safe_psql('postgres', 'SELECT _cr_version FROM orders WHERE id = 3'), $v3{ $_->name },
	$_->name . ': the row of key 3 keeps its version')
  for @nodes;
is(feed($_), '4 update_update pending', $_->name . ': only key 4 still waits')
  for ($ra, $rb);

# a resolver that fails leaves an error entry; fixed, the entry applies again
$_->safe_psql('postgres', q{
	CREATE FUNCTION keep_more(incoming orders, existing orders,
	                          is_tombstone boolean, conflicting orders[])
	RETURNS orders LANGUAGE plpgsql AS $$
	BEGIN
	    RAISE EXCEPTION 'resolver not ready for key %', incoming.id;
	END
	$$}) for @nodes;
$rb->safe_psql('postgres',
	"SELECT cosmosrep.alter_table_policy('orders', 'custom', resolver => 'keep_more')");
$_->poll_query_until('postgres', "SELECT policy = 'custom' FROM cosmosrep.tables")
  or die $_->name . ' did not take the custom policy'
  for ($ra, $rc);
partition_regions(\@nodes);
$ra->safe_psql('postgres', "UPDATE orders SET qty = 50, note = 'a' WHERE id = 5");
$rb->safe_psql('postgres', "UPDATE orders SET qty = 40, note = 'b' WHERE id = 5");
heal_regions(\@nodes);
ok_all_streaming(\@nodes, 'a failing resolver does not stop replication');
ok(wait_for_value($ra,
		"SELECT error FROM cosmosrep.conflict_feed WHERE key->>'id' = '5'",
		'resolver not ready for key 5'),
	'the failure is an error entry with the error text');
wait_for_same_table(\@nodes, 'orders');
is($_->safe_psql('postgres', 'SELECT qty || note FROM orders WHERE id = 5'), '40b',
	$_->name . ': the conflict the resolver failed on stays decided by version (b\'s newer write)')
  for @nodes;
is(join(',', map { $_->safe_psql('postgres',
			"SELECT count(*) FROM cosmosrep.conflict_feed WHERE key->>'id' = '5'") } @nodes),
	'1,0,0', 'the error entry is in the arbiter a alone');
$ra->safe_psql('postgres', 'INSERT INTO orders VALUES (6, 1, \'after\')');
ok(wait_for_value($_, 'SELECT count(*) FROM orders WHERE id = 6', '1'),
	$_->name . ': later changes still replicate')
  for @nodes;

my $id5 = $ra->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE key->>'id' = '5'");
($ret, $out, $err) = $ra->psql('postgres', "SELECT cosmosrep.reapply_conflict($id5)");
like($err, qr/ERROR:  resolver of table "orders" failed on conflict $id5: resolver not ready for key 5/,
	'applying again while the resolver still fails is an error');
$_->safe_psql('postgres', q{
	CREATE OR REPLACE FUNCTION keep_more(incoming orders, existing orders,
	                                     is_tombstone boolean, conflicting orders[])
	RETURNS orders LANGUAGE plpgsql AS $$
	BEGIN
	    incoming.qty := greatest(incoming.qty, existing.qty);
	    incoming.note := 'fixed';
	    RETURN incoming;
	END
	$$}) for @nodes;
is($ra->safe_psql('postgres', "SELECT cosmosrep.reapply_conflict($id5)"), 'merged',
	'the fixed resolver applies the entry');
wait_for_value($_, 'SELECT qty || note FROM orders WHERE id = 5', '50fixed') for @nodes;
wait_for_same_table(\@nodes, 'orders');
for my $node (@nodes)
{
	ok(wait_for_value($node, "SELECT count(*) FROM cosmosrep.conflict_feed WHERE key->>'id' = '5'", '0'),
		$node->name . ': no entry of key 5 waits any more');
}

# Changes that user code rejects in one region: a CHECK constraint and a
# trigger that exist in c only.  They are retried, then wait in c's feed
# as error entries with the whole row, and the stream goes on behind them.
$rc->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE orders ADD CONSTRAINT qty_small CHECK (qty < 100);
	CREATE FUNCTION no_boom() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    IF NEW.note = 'boom' THEN
	        RAISE EXCEPTION 'note boom refused';
	    END IF;
	    RETURN NEW;
	END
	$$;
	CREATE TRIGGER no_boom BEFORE INSERT OR UPDATE ON orders
	    FOR EACH ROW EXECUTE FUNCTION no_boom();
	ALTER TABLE orders ENABLE ALWAYS TRIGGER no_boom});
$ra->safe_psql('postgres', "SELECT cosmosrep.alter_table_policy('orders', 'last_writer_wins')");
$ra->safe_psql('postgres', "INSERT INTO orders VALUES (7, 150, 'big')");
$ra->safe_psql('postgres', "INSERT INTO orders VALUES (8, 1, 'boom')");
$ra->safe_psql('postgres', "INSERT INTO orders VALUES (9, 1, 'after the rejected ones')");
ok(wait_for_value($rc, 'SELECT count(*) FROM orders WHERE id = 9', '1'),
	'c applies what comes after the rejected changes');
is($rc->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || resolution || ' ' || (remote_row->>'id') || ' '
	                  || (remote_row->>'qty') || ' ' || error, E'\n' ORDER BY remote_row->>'id')
	  FROM cosmosrep.conflict_feed WHERE kind = 'apply_error'}),
	"apply_error error 7 150 new row for relation \"orders\" violates check constraint \"qty_small\"\n"
	  . 'apply_error error 8 1 note boom refused',
	'each rejected change waits in the feed with its whole row and the error');
is($rc->safe_psql('postgres', 'SELECT count(*) FROM orders WHERE id IN (7, 8)'), '0',
	'c holds neither rejected row');
ok(wait_for_value($rc,
		"SELECT bool_and(state = 'streaming') FROM cosmosrep.replication_status", 't'),
	'c streams from every region with the rejected changes in the feed');
ok($rc->log_contains('failed again and waits in cosmosrep.conflict_feed'),
	'the log says that a change went to the feed');

# the causes fixed, the entries are applied again and reach every region
$rc->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE orders DROP CONSTRAINT qty_small; DROP TRIGGER no_boom ON orders');
for my $id (7, 8)
{
	my $entry = $rc->safe_psql('postgres',
		"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE remote_row->>'id' = '$id'");
	is($rc->safe_psql('postgres', "SELECT cosmosrep.reapply_conflict($entry)"), 'remote_applied',
		"the rejected change of key $id applies once its cause is fixed");
}
wait_for_same_table(\@nodes, 'orders');
is($rc->safe_psql('postgres', q{SELECT string_agg(id || ':' || qty || ':' || note, ',' ORDER BY id) FROM orders WHERE id IN (7, 8)}),
	'7:150:big,8:1:boom', 'c holds both rows, as every region does');
is($rc->safe_psql('postgres', "SELECT string_agg(key->>'id' || ' ' || resolution, ',') FROM cosmosrep.conflict_feed"),
	'4 pending', 'only the pending conflict of key 4 waits in the feed of c');

# resolved history goes after cosmosrep.conflict_retention; the feed stays
ok($ra->safe_psql('postgres', 'SELECT count(*) > 1 FROM cosmosrep.conflicts WHERE resolved_at IS NOT NULL') eq 't',
	'a holds resolved conflicts');
$ra->append_conf('postgresql.conf',
	"cosmosrep.conflict_retention = '1s'\ncosmosrep.stability_interval = '200ms'");
$ra->reload;
ok(wait_for_value($ra, q{
		SELECT string_agg(key->>'id' || ' ' || resolution, ',') FROM cosmosrep.conflicts}, '4 pending'),
	'resolved conflicts older than the retention are purged, the pending one stays');

# the drain loop README shows, run as it is written there, resolves what
# is left (key 4, pending since the first partition) in every region
open(my $readme, '<', 'README.md') or die "README.md: $!";
my ($drain) = do { local $/; <$readme> } =~ /drain loop, in SQL.*?```sql\n(.*?)```/s;
close($readme);
ok(defined $drain, 'README has the drain loop');
my $v4 = $rb->safe_psql('postgres', 'SELECT _cr_version FROM orders WHERE id = 4');
$rb->safe_psql('postgres', $drain);
for my $node (@nodes)
{
	ok(wait_for_value($node, 'SELECT count(*) FROM cosmosrep.conflict_feed', '0'),
		$node->name . ': the drain loop of README empties the feed');
}
wait_for_same_table(\@nodes, 'orders');
is(rows($ra), '1:10:a 2:30:merged 3:20:b 4:20:b 5:50:fixed 6:1:after 7:150:big 8:1:boom '
	  . '9:1:after the rejected ones',
	'and keeps, for key 4, the row with the higher quantity');
# the resolution is a new write of b (the region id is in the low 8 bits)
is($_->safe_psql('postgres', "SELECT _cr_version > $v4 AND _cr_version % 256 = 2 FROM orders WHERE id = 4"),
	't', $_->name . ': as a new write of b, the region that drained the feed')
  for @nodes;

$_->stop for @nodes;
done_testing();
