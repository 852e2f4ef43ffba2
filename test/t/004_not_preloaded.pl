# Without shared_preload_libraries the extension installs, but everything
# that needs its shared memory says so clearly and changes nothing.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('plain');
$node->init(allows_streaming => 'logical');
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION cosmosrep');

for my $call ("SELECT cosmosrep.create_region('east', 'host=localhost')",
	'SELECT cosmosrep.next_version()',
	'SELECT cosmosrep.current_version()',
	'SELECT cosmosrep.last_write_position()')
{
	my ($rc, $out, $err) = $node->psql('postgres', $call);
	like($err,
		qr/ERROR:  cosmosrep must be loaded via "shared_preload_libraries"\nHINT:  Add cosmosrep to "shared_preload_libraries" in postgresql.conf and restart the server\./,
		"$call explains that the library must be preloaded");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.regions'), '0',
	'no region was created');

$node->stop;
done_testing();
