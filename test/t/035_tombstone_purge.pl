# Tombstones are purged once every region has applied past them (causal
# stability), and not before: while a region is partitioned away, the
# others keep the tombstones its late changes must be ordered against, so
# that a change older than a delete never brings the row back.
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
		ALTER SYSTEM SET cosmosrep.stability_interval = '200ms';
		SELECT pg_reload_conf();
		CREATE TABLE kv (id int PRIMARY KEY, val text);
	});
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('kv')");
$_->poll_query_until('postgres', "SELECT count(*) = 1 FROM cosmosrep.tables")
  for ($rb, $rc);
$ra->safe_psql('postgres',
	"INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 10) g");
wait_for_same_table(\@nodes, 'kv');

# every region applies past a delete: its tombstone goes everywhere
$ra->safe_psql('postgres', 'DELETE FROM kv WHERE id = 1');
wait_for_same_table(\@nodes, 'kv');
for my $node (@nodes)
{
	ok($node->poll_query_until('postgres',
			'SELECT count(*) = 0 FROM cosmosrep.tombstone'),
		$node->name . ': the tombstone is purged once every region has applied past it');
	ok($node->safe_psql('postgres', 'SELECT cosmosrep.purge_horizon() > 0') eq 't',
		$node->name . ': the purge horizon is known once every region announced its stable version');
}

# partition c away from a and b
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('c')");
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('c')");
$rc->safe_psql('postgres', "SELECT cosmosrep.pause_region('a'); SELECT cosmosrep.pause_region('b')");
for my $node (@nodes)
{
	$node->poll_query_until('postgres',
		"SELECT bool_and(state = 'paused' AND worker_pid IS NULL) FROM cosmosrep.replication_status"
		  . " WHERE source_region = 'c' OR target_region = 'c'")
	  or die $node->name . ' did not pause';
}

# a's delete is newer than c's concurrent update: a's clock runs 5 s ahead
$ra->safe_psql('postgres',
	'SELECT cosmosrep.observe_version(cosmosrep.current_version() + (5000::bigint << 21))');
$ra->safe_psql('postgres', 'DELETE FROM kv WHERE id = 2');
$rc->safe_psql('postgres', "UPDATE kv SET val = 'c, older than the delete' WHERE id = 2");
my $update_version = $rc->safe_psql('postgres', 'SELECT _cr_version FROM kv WHERE id = 2');
my $delete_version = $ra->safe_psql('postgres', 'SELECT version FROM cosmosrep.tombstone');
cmp_ok($update_version, '<', $delete_version,
	"c's concurrent update is older than a's delete");
$rb->poll_query_until('postgres', 'SELECT count(*) = 0 FROM kv WHERE id = 2')
  or die 'b did not apply the delete';

# many stability intervals pass: a and b keep the tombstone c has not seen
select(undef, undef, undef, 2);
for my $node ($ra, $rb)
{
	is($node->safe_psql('postgres', 'SELECT cosmosrep.purge_tombstones()'), '0',
		$node->name . ': nothing is purged while c has not applied past the delete');
	is($node->safe_psql('postgres', 'SELECT key FROM cosmosrep.tombstones'), '(2)',
		$node->name . ': the tombstone of the delete stays during the partition');
}

# heal: c's older update must not bring the row back anywhere
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('c')");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('c')");
$rc->safe_psql('postgres', "SELECT cosmosrep.resume_region('a'); SELECT cosmosrep.resume_region('b')");
wait_for_same_table(\@nodes, 'kv');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM kv WHERE id = 2'), '0',
		$node->name . ': the update older than the delete does not resurrect the row');
	ok($node->poll_query_until('postgres',
			'SELECT count(*) = 0 FROM cosmosrep.tombstone'),
		$node->name . ': after the heal every region applies past the delete and purges it');
}
is($ra->safe_psql('postgres', 'SELECT count(*) FROM kv'), '8', 'the other rows are intact');

$_->stop for @nodes;
done_testing();
