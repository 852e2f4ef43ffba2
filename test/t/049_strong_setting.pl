# A wrong setting never locks the server: strong with several write
# regions is refused where it is made (ALTER SYSTEM), and a value that
# reaches the server anyway (postgresql.conf) refuses only the statements
# that read or write multi-region tables, so that the setting can be
# undone from SQL.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CosmosRep::Test;

my ($ra, $rb) = make_group('a', 'b');
for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE accounts (id int PRIMARY KEY, balance int);
		CREATE TABLE local_notes (id int PRIMARY KEY, note text);
		CREATE FUNCTION total() RETURNS bigint LANGUAGE sql
			AS $$ SELECT sum(balance) FROM public.accounts $$;
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('accounts');
	INSERT INTO accounts VALUES (1, 10), (2, 20);
});
wait_for_same_table([ $ra, $rb ], 'accounts');

# refused where it is made
my ($rc, $out, $err) = $ra->psql('postgres',
	"ALTER SYSTEM SET cosmosrep.default_consistency = 'strong'");
like($err,
	qr/ERROR:  consistency level "strong" needs a single write region\nDETAIL:  2 regions accept writes\.\nHINT:  Call cosmosrep\.set_multiple_write_regions\(false\) first\./,
	'ALTER SYSTEM refuses strong while two regions accept writes');
unlike(slurp_file($ra->data_dir . '/postgresql.auto.conf'), qr/default_consistency/,
	'and writes nothing to postgresql.auto.conf');

# the same value written into postgresql.conf by hand reaches the server
$ra->append_conf('postgresql.conf', "cosmosrep.default_consistency = 'strong'");
$ra->reload;
ok($ra->poll_query_until('postgres', 'SHOW cosmosrep.default_consistency', 'strong'),
	'a value in postgresql.conf is not checked against the group');
is($ra->safe_psql('postgres', 'SELECT 1'), '1',
	'a statement that reads no multi-region table runs');
is($ra->safe_psql('postgres',
		"INSERT INTO local_notes VALUES (1, 'local') RETURNING id"), '1',
	'a write to a table that is not multi-region runs');
($rc, $out, $err) = $ra->psql('postgres', 'SELECT count(*) FROM accounts');
like($err, qr/ERROR:  consistency level "strong" needs a single write region/,
	'a read of a multi-region table is refused');
($rc, $out, $err) = $ra->psql('postgres', 'SELECT total()');
like($err, qr/ERROR:  consistency level "strong" needs a single write region/,
	'a function that reads a multi-region table is refused too');
($rc, $out, $err) = $ra->psql('postgres', 'UPDATE accounts SET balance = 0');
like($err, qr/ERROR:  consistency level "strong" needs a single write region/,
	'a write of a multi-region table is refused');

# the way back, from SQL
$ra->safe_psql('postgres',
	"ALTER SYSTEM SET cosmosrep.default_consistency = 'session'; SELECT pg_reload_conf()");
ok($ra->poll_query_until('postgres', 'SHOW cosmosrep.default_consistency', 'session'),
	'ALTER SYSTEM and pg_reload_conf() undo the setting from SQL');
is($ra->safe_psql('postgres', 'SELECT sum(balance) FROM accounts'), '30',
	'the multi-region table reads again');
$ra->safe_psql('postgres', 'UPDATE accounts SET balance = balance + 1');
wait_for_same_table([ $ra, $rb ], 'accounts');
ok_all_streaming([ $ra, $rb ], 'streams after the setting was undone');

# with one write region, strong is accepted where it is made
$ra->safe_psql('postgres', "SELECT cosmosrep.set_multiple_write_regions(false, 'a')");
($rc, $out, $err) = $ra->psql('postgres',
	"ALTER SYSTEM SET cosmosrep.default_consistency = 'strong'");
is($rc, 0, 'ALTER SYSTEM accepts strong with a single write region') or diag($err);
$ra->safe_psql('postgres',
	'ALTER SYSTEM RESET cosmosrep.default_consistency; SELECT pg_reload_conf()');

$_->stop for ($ra, $rb);
done_testing();
