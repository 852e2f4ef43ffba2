# Three regions in a full mesh: inserts, updates and deletes made in each
# region reach every other region, and nothing loops.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @regions = make_group(qw(east west north));
my ($east, $west, $north) = @regions;

##########
# Enabling a table on one region enables it everywhere
##########

for my $node (@regions)
{
	$node->safe_psql('postgres',
		'CREATE TABLE orders (id int PRIMARY KEY, item text, qty int)');
}
$east->safe_psql('postgres', "SELECT cosmosrep.enable_table('orders')");
for my $node ($west, $north)
{
	ok(wait_for_value($node,
			"SELECT count(*) FROM cosmosrep.tables WHERE table_name = 'orders'::regclass", '1'),
		'enabling a table in east makes it multi-region in ' . $node->name);
}

##########
# Writes in every region reach every region
##########

my $base = 0;
for my $node (@regions)
{
	$node->safe_psql('postgres', sprintf(
		"INSERT INTO orders SELECT g, 'item ' || g, g FROM generate_series(%d, %d) g",
		$base + 1, $base + 100));
	$base += 100;
}
wait_for_same_table(\@regions, 'orders');
is($west->safe_psql('postgres', 'SELECT count(*) FROM orders'), '300',
	'inserts of all three regions are everywhere');

$west->safe_psql('postgres', 'UPDATE orders SET qty = qty * 10 WHERE id <= 50');
$north->safe_psql('postgres', 'DELETE FROM orders WHERE id > 250');
$east->safe_psql('postgres', "UPDATE orders SET item = 'moved' WHERE id BETWEEN 101 AND 110");
wait_for_same_table(\@regions, 'orders');
is($east->safe_psql('postgres',
		"SELECT count(*), sum(qty), count(*) FILTER (WHERE item = 'moved') FROM orders"),
	'250|' . (250 * 251 / 2 + 9 * 50 * 51 / 2) . '|10',
	'updates and deletes of every region are everywhere');

is($north->safe_psql('postgres',
		"SELECT count(DISTINCT _cr_region) FROM orders"), '3',
	'rows keep the region that wrote them');

##########
# Status
##########

for my $node (@regions)
{
	ok(wait_for_value($node,
			"SELECT count(*) FROM cosmosrep.replication_status WHERE state = 'streaming'", '2'),
		$node->name . ' streams from both peers');
}
is($east->safe_psql('postgres',
		"SELECT sum(transactions_applied) >= 4 FROM cosmosrep.replication_status"),
	't', 'the status view counts applied transactions');

$_->stop for @regions;
done_testing();
