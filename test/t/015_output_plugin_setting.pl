# Since PostgreSQL 15.19 a slot may only use a plugin listed in
# output_plugin_libraries: join_region checks every region first and says
# what to change, instead of failing halfway with the server's message.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $without = "output_plugin_libraries = 'pgoutput, test_decoding'";

my $ra = new_region('a', create => 1, extra_conf => $without);
my $rb = new_region('b');

my ($rc, $out, $err) = $rb->psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('b', '%s', via => '%s')",
	region_dsn($rb), region_dsn($ra)));
like($err,
	qr/ERROR:  region "a" does not allow the cosmosrep output plugin\nHINT:  Add cosmosrep to "output_plugin_libraries" in the postgresql.conf of region "a" and reload it\./,
	'joining through a region that does not list the plugin fails with a hint');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.regions'), '0',
	'the joining database did not become a region');
is($ra->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '0',
	'no slot was created in the group');

# the setting is reloadable: fix it in a, break it in b
$ra->append_conf('postgresql.conf', "output_plugin_libraries = 'pgoutput, test_decoding, cosmosrep'");
$ra->reload;
$rb->append_conf('postgresql.conf', $without);
$rb->reload;
$rb->poll_query_until('postgres',
	"SELECT current_setting('output_plugin_libraries') !~ 'cosmosrep'") or die;
($rc, $out, $err) = $rb->psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('b', '%s', via => '%s')",
	region_dsn($rb), region_dsn($ra)));
like($err,
	qr/ERROR:  region "b" does not allow the cosmosrep output plugin/,
	'a joining region that does not list the plugin is refused too');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '0',
	'no slot was left in the joining region');

$rb->append_conf('postgresql.conf', "output_plugin_libraries = 'pgoutput, test_decoding, cosmosrep'");
$rb->reload;
$rb->poll_query_until('postgres',
	"SELECT current_setting('output_plugin_libraries') ~ 'cosmosrep'") or die;
$rb->safe_psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('b', '%s', via => '%s')",
	region_dsn($rb), region_dsn($ra)));
ok($ra->poll_query_until('postgres',
		"SELECT state = 'streaming' FROM cosmosrep.replication_status WHERE source_region = 'b'"),
	'with the plugin listed everywhere the join succeeds');

$_->stop for ($ra, $rb);
done_testing();
