# Passwords in the connection strings regions use never reach a server log
# or a view that a user who is not a superuser can read, including while a
# region joins (its connection string travels to every member).
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $ra = new_region('a');
my $rb = new_region('b');
my $dsn_a = region_dsn($ra) . ' password=s3cr3t_of_a';
my $dsn_b = region_dsn($rb) . ' password=s3cr3t_of_b';

$ra->safe_psql('postgres', "SELECT cosmosrep.create_region('a', '$dsn_a')");
for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', 'CREATE TABLE kv (id int PRIMARY KEY, v text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('kv')");
$rb->safe_psql('postgres',
	"SELECT cosmosrep.join_region('b', '$dsn_b', via => '$dsn_a')");
$ra->safe_psql('postgres', "INSERT INTO kv VALUES (1, 'x')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM kv') or die 'no replication';

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', 'CREATE ROLE reader LOGIN');
	my $visible = $node->safe_psql('postgres', q{
		SET ROLE reader;
		SELECT string_agg(dsn, ' ') FROM cosmosrep.regions;
	}) . $node->safe_psql('postgres', q{
		SET ROLE reader;
		SELECT coalesce(string_agg(concat_ws(' ', source_region, state, last_error), ' '), '')
		  FROM cosmosrep.replication_status;
	});
	unlike($visible, qr/s3cr3t/, $node->name . ': a user who is not a superuser sees no password');
	like($visible, qr/host=\S+.*host=\S+/, $node->name . ': but sees both connection strings');
	# the secrets are there, for the superuser and the workers
	like($node->safe_psql('postgres', q{SELECT string_agg(dsn, ' ' ORDER BY region_id) FROM cosmosrep.region}),
		qr/password=s3cr3t_of_a.*password=s3cr3t_of_b/,
		$node->name . ': the connection strings keep their passwords');
}

# an error of a link is shown without the password, and not logged with it
$ra->stop;
$rb->poll_query_until('postgres',
	"SELECT last_error IS NOT NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die 'the link from a shows no error';
my $error = $rb->safe_psql('postgres', q{
	SET ROLE reader;
	SELECT last_error FROM cosmosrep.replication_status WHERE source_region = 'a'});
unlike($error, qr/s3cr3t/, 'b: the error of the link from a shows no password');
$ra->start;

for my $node ($ra, $rb)
{
	my $log = slurp_file($node->logfile);
	unlike($log, qr/s3cr3t/, $node->name . ': no password in the server log');
}

$_->stop for ($ra, $rb);
done_testing();
