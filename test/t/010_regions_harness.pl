# The multi-region harness: two instances on loopback, each its own
# region with its own id, writes stamped with the writer's region.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $east = new_region('east', create => 1);
my $west = new_region('west');

$west->safe_psql('postgres', q{
	DELETE FROM cosmosrep.region;
});
$west->safe_psql('postgres', sprintf(
	"INSERT INTO cosmosrep.region (region_id, region_name, dsn, is_local) VALUES (2, 'west', '%s', true)",
	region_dsn($west)));

for my $node ($east, $west)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE items (id int PRIMARY KEY, note text);
		SELECT cosmosrep.enable_table('items');
		INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 100) g;
	});
	is($node->safe_psql('postgres', 'SELECT count(*) FROM items'), '100',
		$node->name . ' accepts writes');
	like($node->safe_psql('postgres', 'SHOW output_plugin_libraries'),
		qr/\bcosmosrep\b/, $node->name . ' allows the cosmosrep output plugin');
}

is($east->safe_psql('postgres', 'SELECT DISTINCT _cr_region FROM items'), '1',
	'rows written in east carry region 1');
is($west->safe_psql('postgres', 'SELECT DISTINCT _cr_region FROM items'), '2',
	'rows written in west carry region 2');
isnt(table_checksum($east, 'items'), table_checksum($west, 'items'),
	'without replication the regions differ only by their versions');
is($east->safe_psql('postgres', 'SELECT md5(string_agg(id || note, \',\' ORDER BY id)) FROM items'),
	$west->safe_psql('postgres', 'SELECT md5(string_agg(id || note, \',\' ORDER BY id)) FROM items'),
	'user columns are the same on both');

$_->stop for ($east, $west);
done_testing();
