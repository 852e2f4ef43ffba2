# Session tokens through a real PgBouncer (Debian's 1.18) in front of each
# region, in session mode and in transaction mode: what the pooler passes
# on, and the ways a client of each mode reads its token and presents it
# in another region (README, "Session tokens through a connection pooler").
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

use CosmosRep::Test;

my $pgbouncer = '/usr/sbin/pgbouncer';
plan skip_all => 'pgbouncer is not installed (test/setup installs it)' unless -x $pgbouncer;

my ($ra, $rb) = make_group('a', 'b');
for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', 'CREATE TABLE cart (id int PRIMARY KEY, item text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('cart')");
ok(wait_for_policies($rb, 'cart|last_writer_wins||'), 'cart is multi-region in both regions');

my $user = $ra->safe_psql('postgres', 'SELECT current_user');
my @bouncers;

# a PgBouncer in front of $node in $mode; returns its connection string
sub start_pgbouncer
{
	my ($node, $mode) = @_;
	my $dir = tempdir(CLEANUP => 1);
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	open(my $users, '>', "$dir/users.txt") or die;
	print $users qq{"$user" ""\n};
	close $users;
	open(my $ini, '>', "$dir/pgbouncer.ini") or die;
	print $ini <<"INI";
[databases]
postgres = host=@{[ $node->host ]} port=@{[ $node->port ]} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = $mode
default_pool_size = 2
max_client_conn = 50
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
INI
	close $ini;
	my $h = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ],
		'>', "$dir/stdout", '2>', "$dir/stderr");
	push @bouncers, $h;
	my $dsn = "host=127.0.0.1 port=$port dbname=postgres user=$user";
	for (1 .. 100)
	{
		last if system('psql', '-XAtq', '-d', $dsn, '-c', 'SELECT 1') == 0;
		select(undef, undef, undef, 0.1);
	}
	return $dsn;
}

sub psql_via
{
	my ($dsn, $sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $dsn, '-c', $sql ],
		'>', \$out, '2>', \$err);
	chomp $out;
	return ($out, $err);
}

##################################################################
# Session mode
##################################################################

my $a_session = start_pgbouncer($ra, 'session');
my $b_session = start_pgbouncer($rb, 'session');

# what an application sees: psycopg's parameter status, and the function
my $client = <<'PY';
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("INSERT INTO cart VALUES (1, 'pen')")
    reported = conn.info.parameter_status("cosmosrep.session_token")
    token = conn.execute("SELECT cosmosrep.session_token()").fetchone()[0]
print(reported)
print(token)
PY
my ($py_out, $py_err) = ('', '');
IPC::Run::run([ 'python3', '-c', $client, $a_session ], '>', \$py_out, '2>', \$py_err);
my ($reported, $token) = split /\n/, $py_out;
like($token // '', qr/^1:[0-9A-F]+\/[0-9A-F]+$/,
	'in session mode, cosmosrep.session_token() after the commit gives the token')
  or diag($py_err);
is($reported, $token,
	'PgBouncer 1.18 in session mode passes the reported token on to its client');

# the other region, through its pooler: the token makes the read wait
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die 'the link did not pause';
($py_out, $py_err) = ('', '');
IPC::Run::run([ 'python3', '-c', $client =~ s/VALUES \(1, 'pen'\)/VALUES (2, 'ink')/r, $a_session ],
	'>', \$py_out, '2>', \$py_err);
(undef, $token) = split /\n/, $py_out;
my ($out, $err) = psql_via($b_session,
	"SET cosmosrep.session_wait_timeout = '1s'; SET cosmosrep.session_token = '$token';"
	  . ' SELECT count(*) FROM cart');
like($err, qr/ERROR:  session not available in this region/,
	'in session mode, a token set in the other region is enforced: it waits, then fails, while the region is behind');
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
($out, $err) = psql_via($b_session,
	"SET cosmosrep.session_token = '$token'; SELECT string_agg(item, ',' ORDER BY id) FROM cart");
is($out, 'pen,ink', 'and once the region catches up, the read sees the write') or diag($err);

##################################################################
# Transaction mode
##################################################################

my $a_tx = start_pgbouncer($ra, 'transaction');
my $b_tx = start_pgbouncer($rb, 'transaction');

# one round trip that commits, then reads the token on the same server
# connection (the pooler keeps it until the query string is done)
($out, $err) = psql_via($a_tx,
	"BEGIN; INSERT INTO cart VALUES (3, 'cap'); COMMIT; SELECT cosmosrep.session_token()");
like($out, qr/^1:[0-9A-F]+\/[0-9A-F]+/,
	'in transaction mode, the write and the token read in one query string give the token')
  or diag($err);
$token = $out;
is($token, $ra->safe_psql('postgres',
		"SELECT '1:' || cosmosrep.last_write_position()"),
	'and it is the end of that commit');

# the reported token reaches a client of a transaction pool too: it comes
# with the commit's reply, while the server connection is still the
# client's
my $tx_client = <<'PY';
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("INSERT INTO cart VALUES (5, 'tape')")
    print(conn.info.parameter_status("cosmosrep.session_token"))
PY
($py_out, $py_err) = ('', '');
IPC::Run::run([ 'python3', '-c', $tx_client, $a_tx ], '>', \$py_out, '2>', \$py_err);
chomp $py_out;
like($py_out,
	qr/(^|,)1:\Q@{[ $ra->safe_psql('postgres', 'SELECT cosmosrep.last_write_position()') ]}\E(,|$)/,
	'in transaction mode, the client receives the token of its commit as a parameter status')
  or diag($py_err);

# presented with SET LOCAL, so that it stays with this transaction
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die 'the link did not pause';
($out, $err) = psql_via($a_tx,
	"BEGIN; INSERT INTO cart VALUES (4, 'pad'); COMMIT; SELECT cosmosrep.session_token()");
$token = $out;
($out, $err) = psql_via($b_tx,
	"BEGIN; SET LOCAL cosmosrep.session_wait_timeout = '1s';"
	  . " SET LOCAL cosmosrep.session_token = '$token'; SELECT count(*) FROM cart; COMMIT");
like($err, qr/ERROR:  session not available in this region/,
	'in transaction mode, a token set with SET LOCAL is enforced in the other region');
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
($out, $err) = psql_via($b_tx,
	"BEGIN; SET LOCAL cosmosrep.session_token = '$token';"
	  . " SELECT string_agg(item, ',' ORDER BY id) FROM cart; COMMIT");
is($out, 'pen,ink,cap,pad,tape', 'and the read sees every write once the region caught up')
  or diag($err);
($out, $err) = psql_via($b_tx, 'SHOW cosmosrep.session_token');
is($out, '', 'SET LOCAL leaves no token behind on the pooled server connection');

wait_for_same_table([ $ra, $rb ], 'cart');
$_->kill_kill for @bouncers;
$_->stop for ($ra, $rb);
done_testing();
