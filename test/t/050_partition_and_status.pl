# Partitions, a stopped region, the status view and removing a region, in
# a group of three:
# 1. pausing replication between a and b in both directions (a rehearsed
#    partition) keeps every region writable, c still gets everything, and
#    after resuming the three regions converge;
# 2. a region that is down for a while: its slots on the others keep the
#    WAL it has not received, and once started it catches up;
# 3. cosmosrep.replication_status reports streaming, no lag, latency
#    percentiles and counters for every pair;
# 4. remove_region removes a region from the whole group: regions, slots
#    and origins, while the others keep replicating;
# and pause, resume and remove refuse unknown regions and this region.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my ($ra, $rb, $rc) = make_group(qw(a b c));
my @all = ($ra, $rb, $rc);

for my $node (@all)
{
	$node->safe_psql('postgres',
		'CREATE TABLE items (id int PRIMARY KEY, origin text NOT NULL, v int NOT NULL DEFAULT 0)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('items')");
for my $node ($rb, $rc)
{
	$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
	  or die 'enabling items did not reach ' . $node->name;
}

# insert rows $from..$to written in $node
sub write_rows
{
	my ($node, $from, $to) = @_;
	$node->safe_psql('postgres', sprintf(
		"INSERT INTO items (id, origin) SELECT g, '%s' FROM generate_series(%d, %d) g",
		$node->name, $from, $to));
}

# how many rows written in region $origin $node holds
sub rows_from
{
	my ($node, $origin) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM items WHERE origin = '$origin'");
}

sub slot_state
{
	my ($node, $slot) = @_;
	return $node->safe_psql('postgres',
		"SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'");
}

##########
# Unknown regions and this region are refused
##########

for my $fn (qw(pause_region resume_region remove_region))
{
	my ($ret, $out, $err) = $ra->psql('postgres', "SELECT cosmosrep.$fn('zz')");
	like($err, qr/ERROR:  region "zz" does not exist/, "$fn refuses an unknown region");
	($ret, $out, $err) = $ra->psql('postgres', "SELECT cosmosrep.$fn('a')");
	like($err, qr/ERROR:  region "a" is this region/, "$fn refuses this region's own name");
}
is($ra->safe_psql('postgres',
		"SELECT count(*) FROM cosmosrep.regions"), '3', 'the refused calls removed no region');
is($ra->safe_psql('postgres',
		"SELECT count(*) FROM cosmosrep.replication_status WHERE state = 'paused'"), '0',
	'the refused calls paused nothing');

##########
# 1. A rehearsed partition between a and b
##########

$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
is($rb->safe_psql('postgres',
		"SELECT state FROM cosmosrep.replication_status WHERE source_region = 'a'"),
	'paused', "b shows its stream from a as paused");
is($ra->safe_psql('postgres',
		"SELECT state FROM cosmosrep.replication_status WHERE source_region = 'b'"),
	'paused', "a shows its stream from b as paused");
for my $node ($ra, $rb)
{
	ok($node->poll_query_until('postgres',
			"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE state = 'paused'"),
		$node->name . ' stops its apply worker for the paused region');
}
ok($ra->poll_query_until('postgres',
		"SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'cr_a_b'"),
	"nobody streams from b's slot on a while b pauses a");

# every region stays writable
write_rows($ra, 1, 100);
write_rows($rb, 101, 200);
write_rows($rc, 201, 300);

ok(wait_for_value($rc, 'SELECT count(*) FROM items', '300'),
	'c receives the writes of both sides of the partition');
ok(wait_for_value($rb, "SELECT count(*) FROM items WHERE origin = 'c'", '100'),
	'b still receives the writes of c');
ok(wait_for_value($ra, "SELECT count(*) FROM items WHERE origin = 'c'", '100'),
	'a still receives the writes of c');
is(rows_from($rb, 'a'), '0', 'b does not apply the writes of a while paused');
is(rows_from($ra, 'b'), '0', 'a does not apply the writes of b while paused');
is($rb->safe_psql('postgres',
		"SELECT state FROM cosmosrep.replication_status WHERE source_region = 'c'"),
	'streaming', 'b streams from c during the partition');

$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
wait_for_same_table(\@all, 'items');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM items'), '300',
	'after resuming, the three regions hold all 300 rows');
for my $node ($ra, $rb)
{
	ok(wait_for_value($node,
			"SELECT count(*) FROM cosmosrep.replication_status WHERE state = 'streaming'", '2'),
		$node->name . ' streams from both peers again after resuming');
}

##########
# 2. A region that is down for a while
##########

$rc->stop;
for my $node ($ra, $rb)
{
	my $slot = 'cr_' . $node->name . '_c';
	ok($node->poll_query_until('postgres',
			"SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'"),
		"$slot on " . $node->name . ' is inactive while c is down');
}

write_rows($ra, 1001, 2000);
write_rows($rb, 2001, 3000);
$ra->safe_psql('postgres', 'UPDATE items SET v = v + 1 WHERE id BETWEEN 1001 AND 1500');
$rb->safe_psql('postgres', 'DELETE FROM items WHERE id BETWEEN 2901 AND 3000');
wait_for_same_table([ $ra, $rb ], 'items');

for my $node ($ra, $rb)
{
	my $slot = 'cr_' . $node->name . '_c';
	is($node->safe_psql('postgres', qq{
			SELECT NOT active AND restart_lsn IS NOT NULL
			       AND pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) > 0
			       AND wal_status IN ('reserved', 'extended')
			  FROM pg_replication_slots WHERE slot_name = '$slot'}), 't',
		"$slot on " . $node->name . ' retains the WAL c has not received');
}
ok($ra->poll_query_until('postgres', q{
		SELECT state = 'unreachable' AND last_error LIKE '%region "c"%'
		  FROM cosmosrep.replication_status WHERE source_region = 'c'}),
	"a reports that it cannot stream from c");

$rc->start;
wait_for_same_table(\@all, 'items');
is($rc->safe_psql('postgres',
		"SELECT count(*) || ' ' || sum(v) FROM items"), '2200 500',
	'c caught up with every insert, update and delete made while it was down');
for my $node ($ra, $rb)
{
	my $slot = 'cr_' . $node->name . '_c';
	ok($node->poll_query_until('postgres',
			"SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'"),
		"c streams from $slot on " . $node->name . ' again');
}

##########
# 3. The status view after traffic
##########

write_rows($ra, 5001, 5010);
write_rows($rb, 5011, 5020);
write_rows($rc, 5021, 5030);
wait_for_same_table(\@all, 'items');

for my $node (@all)
{
	my $name = $node->name;
	my $peers = join(',', sort grep { $_ ne $name } qw(a b c));

	is($node->safe_psql('postgres', q{
			SELECT string_agg(source_region, ',' ORDER BY source_region) || ' '
			       || string_agg(DISTINCT target_region, ',')
			  FROM cosmosrep.replication_status}),
		"$peers $name", "$name has one status row per peer, with itself as target");
	ok(wait_for_value($node,
			"SELECT count(*) FROM cosmosrep.replication_status WHERE state = 'streaming'", '2'),
		"$name streams from both peers");
	ok(wait_for_value($node,
			"SELECT bool_and(lag_bytes = 0) FROM cosmosrep.replication_status", 't'),
		"$name has no lag once traffic stops");
	is($node->safe_psql('postgres', q{
			SELECT bool_and(latency_p50_ms IS NOT NULL AND latency_p99_ms IS NOT NULL
			                AND latency_p50_ms >= 0 AND latency_p50_ms <= latency_p99_ms)
			  FROM cosmosrep.replication_status}), 't',
		"$name reports latency percentiles with p50 <= p99 for both peers");
	is($node->safe_psql('postgres', q{
			SELECT bool_and(transactions_applied > 0 AND changes_applied >= transactions_applied
			                AND last_commit_time IS NOT NULL AND lag_seconds = 0)
			  FROM cosmosrep.replication_status}), 't',
		"$name counts applied transactions and changes from both peers");
}

##########
# 4. Removing a region
##########

# while c still runs, its apply workers stream from cr_a_c and cr_b_c:
# remove_region must end those streams and drop the slots
my ($ret, $out, $err) = $ra->psql('postgres',
	"SET statement_timeout = '15s'; SELECT cosmosrep.remove_region('c')");
is($ret, 0, 'remove_region removes a region that is still running')
  or diag "remove_region('c') while c runs: $err";

# the removed region is decommissioned
$rc->stop;

for my $node ($ra, $rb)
{
	my $name = $node->name;

	is($node->safe_psql('postgres',
			"SELECT string_agg(region_name, ',' ORDER BY region_name) FROM cosmosrep.regions"),
		'a,b', "$name no longer lists c among the regions");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cr_${name}_c'"),
		'0', "the slot cr_${name}_c is gone from $name");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM pg_replication_origin WHERE roname = 'cosmosrep_c'"),
		'0', "the origin cosmosrep_c is gone from $name");
	is($node->safe_psql('postgres',
			"SELECT string_agg(source_region, ',') FROM cosmosrep.replication_status"),
		$name eq 'a' ? 'b' : 'a', "$name shows status only for the remaining peer");
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'cosmosrep apply from c'"),
		"$name runs no apply worker for c any more");
}

write_rows($ra, 6001, 6010);
write_rows($rb, 6011, 6020);
$ra->safe_psql('postgres', 'UPDATE items SET v = v + 10 WHERE id = 6011');
wait_for_same_table([ $ra, $rb ], 'items');
is($rb->safe_psql('postgres', 'SELECT count(*) || \' \' || sum(v) FROM items'), '2250 510',
	'a and b still replicate to each other after removing c');

# what c's removal leaves behind stays gone: nothing recreates it
for my $node ($ra, $rb)
{
	my $name = $node->name;
	is($node->safe_psql('postgres', qq{
			SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cr_${name}_c')
			     + (SELECT count(*) FROM pg_replication_origin WHERE roname = 'cosmosrep_c')}),
		'0', "no slot or origin for c reappears in $name");
}

$_->stop for ($ra, $rb);
done_testing();
