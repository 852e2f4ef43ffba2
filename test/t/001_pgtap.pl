# The pgTAP tests of the SQL API contracts (test/pgtap/*.sql), run with
# pg_prove against one region.  Each pgTAP file creates the extension in
# its own transaction and rolls it back, so the region starts without it.
use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

# test/pgtap, next to this file's directory test/t
my $pgtap_dir = File::Spec->catdir(dirname(dirname(File::Spec->rel2abs(__FILE__))), 'pgtap');
my @pgtap_files = sort glob("$pgtap_dir/*.sql");
BAIL_OUT("no pgTAP files in $pgtap_dir") unless @pgtap_files;

my $node = new_region('pgtap');
$node->safe_psql('postgres', 'DROP EXTENSION cosmosrep');
$node->safe_psql('postgres', 'CREATE EXTENSION pgtap');

my $psql = File::Spec->catfile($node->config_data('--bindir'), 'psql');
my @cmd = (
	'pg_prove', '--verbose', '--psql-bin', $psql,
	'--host', $node->host, '--port', $node->port,
	'--dbname', 'postgres', @pgtap_files);

my ($stdout, $stderr) = ('', '');
my $ran = IPC::Run::run(\@cmd, '>', \$stdout, '2>', \$stderr);
my $exit = $? >> 8;

if (ok($ran && $exit == 0,
		'the pgTAP tests of the SQL API pass (' . scalar(@pgtap_files) . ' files)'))
{
	note($stdout);
	note($stderr) if $stderr ne '';
}
else
{
	diag("pg_prove exited with $exit\n$stdout\n$stderr");
}

# every file cleaned up after itself
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'cosmosrep'"),
	'0', 'the pgTAP files leave no cosmosrep extension behind');

$node->stop;
done_testing();
