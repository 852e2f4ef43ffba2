# Bounded staleness and monotonic reads, in three regions.
#
# Under cosmosrep.default_consistency = bounded_staleness, a write waits
# while another region is more than max_staleness_prefix versions or
# max_staleness_interval behind this region's writes, and fails after
# session_wait_timeout; it goes through once the region catches up.  A
# region whose link from here is paused over there, or which is down,
# counts; pausing it here takes it out of the bound.  A read in a region
# that lags beyond the interval waits or fails.
#
# Reads advance a session's token: a session that carries its token from
# region to region never sees a value older than one it saw before.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b c));
my ($ra, $rb, $rc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY, v int)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('t')");
$_->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die for ($rb, $rc);

sub set_conf
{
	my ($node, $conf, $check, $expected) = @_;
	$node->append_conf('postgresql.conf', $conf);
	$node->reload;
	$node->poll_query_until('postgres', $check, $expected) or die;
	return;
}

sub write_a
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $ra->psql('postgres', $sql);
	return $err;
}

set_conf($ra, "cosmosrep.default_consistency = 'bounded_staleness'\n"
	  . "cosmosrep.max_staleness_prefix = 5\ncosmosrep.session_wait_timeout = '1s'",
	'SHOW cosmosrep.max_staleness_prefix', '5');

# b pauses its link from a: b falls behind a's writes
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die;
is(write_a('INSERT INTO t SELECT g, 0 FROM generate_series(1, 5) g'), '',
	'a writes up to the bound while b does not apply it');
like(write_a('INSERT INTO t VALUES (6, 0)'),
	qr/ERROR:  bounded staleness exceeded: region "b" is behind the writes of this region\nDETAIL:  It has not applied 5 versions written here, the oldest \d+ ms ago; the bound is 5 versions or 300000 ms\./,
	'the next write waits, then fails, naming the region behind and by how much');
is($ra->safe_psql('postgres', 'SELECT count(*) FROM t'), '5', 'and writes nothing');

# a write that waits goes through once b catches up
my $writer = $ra->background_psql('postgres', on_error_stop => 0);
$writer->query_safe("SET cosmosrep.session_wait_timeout = '60s'");
$writer->query_until(qr/writing/, "\\echo writing\nINSERT INTO t VALUES (6, 0);\n\\echo written\n");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
like($writer->query_until(qr/written/, ''), qr/written/,
	'a waiting write goes through once b has applied a\'s writes');
$writer->quit;
is($ra->safe_psql('postgres', 'SELECT count(*) FROM t'), '6', 'the write is there');
wait_for_same_table(\@nodes, 't');

# down: b stopped counts as well
$rb->stop;
is(write_a('INSERT INTO t SELECT g, 0 FROM generate_series(7, 11) g'), '',
	'a writes up to the bound while b is down');
like(write_a('INSERT INTO t VALUES (12, 0)'), qr/bounded staleness exceeded: region "b" is behind/,
	'and no further');

# paused here, b is out of the bound
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
is(write_a('INSERT INTO t VALUES (12, 0)'), '',
	'with b paused in a, a writes on: the bound leaves b out');
$rb->start;
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
wait_for_same_table(\@nodes, 't');

# the interval bound, and reads in a region that lags beyond it
set_conf($ra, "cosmosrep.max_staleness_prefix = 1000000\ncosmosrep.max_staleness_interval = '2s'",
	'SHOW cosmosrep.max_staleness_interval', '2s');
set_conf($rb, "cosmosrep.default_consistency = 'bounded_staleness'\n"
	  . "cosmosrep.max_staleness_interval = '2s'\ncosmosrep.session_wait_timeout = '1s'",
	'SHOW cosmosrep.max_staleness_interval', '2s');
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die;
is(write_a('INSERT INTO t VALUES (13, 0)'), '', 'a writes while b is within the interval');
sleep(3);
like(write_a('INSERT INTO t VALUES (14, 0)'),
	qr/bounded staleness exceeded: region "b" is behind the writes of this region\nDETAIL:  It has not applied \d+ versions written here, the oldest (\d+) ms ago; the bound is 1000000 versions or 2000 ms\./,
	'once b is behind a\'s oldest unapplied write by more than the interval, a\'s writes fail');
my ($ret, $out, $err) = $rb->psql('postgres', 'SELECT count(*) FROM t');
like($err, qr/ERROR:  bounded staleness exceeded in this region\nDETAIL:  It is \d+ ms behind region "a"; the bound is 2000 ms\./,
	'a read in b, which lags beyond the interval, fails');
is($rb->safe_psql('postgres', "SET cosmosrep.consistency = 'eventual'; SELECT count(*) FROM t"), '12',
	'a session that relaxes the level reads what b has');
$rb->safe_psql('postgres',
	"SET cosmosrep.consistency = 'eventual'; SELECT cosmosrep.resume_region('a')");
ok(wait_for_value($rb, 'SELECT count(*) FROM t', '13'), 'b catches up and reads again');
is(write_a('INSERT INTO t VALUES (14, 0)'), '', 'and a writes again');

set_conf($_, "cosmosrep.default_consistency = 'session'", 'SHOW cosmosrep.default_consistency',
	'session') for ($ra, $rb);
wait_for_same_table(\@nodes, 't');

# monotonic reads: a counter moves on in a; a session reads it alternately
# in b and c, carrying its token, a thousand times
$ra->safe_psql('postgres', 'INSERT INTO t VALUES (0, 0)');
wait_for_value($_, 'SELECT count(*) FROM t WHERE id = 0', '1') for ($rb, $rc);
$ra->safe_psql('postgres', 'CREATE TABLE stop_bumping (stop boolean)');
my $bump = $ra->background_psql('postgres');
$bump->query_until(qr/bumping/, "\\echo bumping\n"
	  . "DO \$\$ BEGIN WHILE NOT EXISTS (SELECT FROM stop_bumping) LOOP"
	  . " UPDATE t SET v = v + 1 WHERE id = 0; COMMIT; PERFORM pg_sleep(0.001); END LOOP; END \$\$;\n");
my %session = (b => $rb->background_psql('postgres'), c => $rc->background_psql('postgres'));
# a loaded machine may lag behind a's writes for more than a second
$_->query_safe("SET cosmosrep.session_wait_timeout = '60s'") for values %session;
# the session starts from a token of its first read in b
$session{b}->query_safe("SET cosmosrep.session_token = '" . $ra->safe_psql('postgres', q{
	SELECT '1:' || cosmosrep.last_write_position()}) . "'");
my ($token, $last, $went_back, $reads, $increases) = ('', -1, 0, 0, 0);
my %tokens;
for my $i (1 .. 1000)
{
	my $s = $session{ $i % 2 ? 'b' : 'c' };
	$s->query_safe("SET cosmosrep.session_token = '$token'") if $token ne '';
	my $v = $s->query_safe('SELECT v FROM t WHERE id = 0');
	$token = $s->query_safe('SELECT cosmosrep.session_token()');
	$went_back++ if $v < $last;
	$increases++ if $v > $last;
	$last = $v;
	$reads++;
	$tokens{$token} = 1;
}
is($reads, 1000, 'a thousand reads, alternately in b and c');
cmp_ok($increases, '>=', 20, 'the reads raced with a\'s writes: the value rose often');
cmp_ok(scalar(keys %tokens), '>', 10,
	'the token of a session that never writes moved on with its reads');

# deterministically: c stops applying a; a read in b advances the token
# past what c has, so the session's next read in c waits for it
$rc->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rc->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die;
$ra->poll_query_until('postgres', q{
	SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) > 0
	  FROM pg_replication_slots WHERE slot_name = 'cr_a_c'}) or die;
$session{b}->query_safe("SET cosmosrep.session_token = '$token'");
$session{b}->query_safe('SELECT v FROM t WHERE id = 0');
$token = $session{b}->query_safe('SELECT cosmosrep.session_token()');
my ($r, $o, $e) = $rc->psql('postgres',
	"SET cosmosrep.session_wait_timeout = '1s'; SET cosmosrep.session_token = '$token';"
	  . ' SELECT v FROM t WHERE id = 0');
like($e, qr/ERROR:  session not available in this region\nDETAIL:  Region "c" is behind: it has applied region "a"/,
	'a read in b advanced the token: c, which has not applied as far, does not serve it');
$rc->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
is($went_back, 0, 'no read saw an older value than the read before it');
ok($last > 0, 'and the counter moved meanwhile');
$_->quit for values %session;
$ra->safe_psql('postgres', 'INSERT INTO stop_bumping VALUES (true)');
$bump->quit;

$_->stop for @nodes;
done_testing();
