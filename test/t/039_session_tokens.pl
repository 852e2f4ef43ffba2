# Session consistency across regions: a token from a write in one region,
# set in another, makes reads there wait until that region has applied
# the write (read your writes), fail with "session not available" after
# cosmosrep.session_wait_timeout, and a session that relaxes to eventual
# does not wait.
use strict;
use warnings;

use CosmosRep::Test;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my ($ra, $rb) = make_group(qw(a b));
for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', 'CREATE TABLE cart (id int PRIMARY KEY, item text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('cart')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables') or die;

# b stops applying a's changes
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres',
	"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status")
  or die 'b did not pause';

my $token = $ra->safe_psql('postgres',
	"INSERT INTO cart VALUES (1, 'book'); SELECT cosmosrep.session_token()");
like($token, qr/^1:[0-9A-F]+\/[0-9A-F]+$/, 'a write returns a token naming its region and commit');

my ($ret, $out, $err) = $rb->psql('postgres', qq{
	SET cosmosrep.session_wait_timeout = '300ms';
	SET cosmosrep.session_token = '$token';
	SELECT count(*) FROM cart});
(my $position = $token) =~ s/^1://;
like($err, qr/ERROR:  session not available in this region\nDETAIL:  Region "b" is behind: it has applied region "a" up to [0-9A-F]+\/[0-9A-F]+, \d+ bytes short of the session token's $position\./,
	'a read with a token the region has not applied fails after the timeout, naming the region behind');

is($rb->safe_psql('postgres', qq{
	SET cosmosrep.consistency = 'eventual';
	SET cosmosrep.session_token = '$token';
	SELECT count(*) FROM cart}),
	'0', 'a session relaxed to eventual reads at once, without the write');

# a read that waits, and succeeds once the region has applied the write
my ($stdout, $stderr) = ('', '');
my $reader = IPC::Run::start(
	[ 'psql', '-X', '-A', '-t', '-d', $rb->connstr('postgres'), '-c',
		"SET cosmosrep.session_wait_timeout = '60s'; SET cosmosrep.session_token = '$token'; SELECT item FROM cart" ],
	'>', \$stdout, '2>', \$stderr);
ok($rb->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%FROM cart%'}),
	'the read waits for the region to apply the token');
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
$reader->finish;
is($stdout, "SET\nSET\nbook\n", 'once the region has applied the write, the waiting read sees it');

# what a client sees: the token arrives as a parameter status after the
# commit, the way an application reads it (psycopg 3, libpq underneath)
my $client = <<'PY';
import sys, psycopg
a, b = sys.argv[1], sys.argv[2]
with psycopg.connect(a, autocommit=True) as conn:
    before = conn.info.parameter_status("cosmosrep.session_token")
    conn.execute("INSERT INTO cart VALUES (2, 'pen')")
    token = conn.info.parameter_status("cosmosrep.session_token")
    same = conn.execute("SELECT cosmosrep.session_token()").fetchone()[0] == token
with psycopg.connect(b, autocommit=True) as conn:
    conn.execute("SET cosmosrep.session_token = %s" % psycopg.sql.quote(token))
    item = conn.execute("SELECT item FROM cart WHERE id = 2").fetchone()[0]
print(before != token, same, item)
print(token)
PY
my ($py_out, $py_err) = ('', '');
IPC::Run::run([ 'python3', '-c', $client, $ra->connstr('postgres'), $rb->connstr('postgres') ],
	'>', \$py_out, '2>', \$py_err);
my ($py_result, $py_token) = split /\n/, $py_out;
is($py_result, 'True True pen',
	'a client receives the token as a parameter status after its commit, and reads its write in the other region with it')
  or diag($py_err);
like($py_token // '',
	qr/(^|,)1:\Q@{[ $ra->safe_psql('postgres', 'SELECT cosmosrep.last_write_position()') ]}\E(,|$)/,
	'the token the client received holds the end of its commit in a');

# read your writes over a thousand operations: writes and reads alternating
# between the regions, each read carrying the token of everything before
my $misses = 0;
my $tok = '';
for my $i (1 .. 500)
{
	my $writer = $i % 2 ? $ra : $rb;
	my $reader_node = $i % 2 ? $rb : $ra;
	$tok = $writer->safe_psql('postgres',
		($tok ne '' ? "SET cosmosrep.session_token = '$tok'; " : '')
		  . "INSERT INTO cart VALUES (100 + $i, 'item $i'); SELECT cosmosrep.session_token()");
	my $seen = $reader_node->safe_psql('postgres',
		"SET cosmosrep.session_token = '$tok'; SELECT count(*) FROM cart WHERE id BETWEEN 101 AND 100 + $i");
	$misses++ if $seen != $i;
}
is($misses, 0, 'every read in the other region sees every write of the session before it');
like($tok, qr/^(1|2):[^,]+,(1|2):[^,]+$/, 'tokens from writes in two regions merge into one');

$_->stop for ($ra, $rb);
done_testing();
