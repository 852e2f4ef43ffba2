# Write regions and strong consistency, in three regions.  Multi-region
# writes switched off leave one write region, set in every region; the
# others refuse writes to multi-region tables.  Under strong, a statement
# is refused while several regions accept writes; with one write region,
# a commit there returns once the regions have applied it (synchronous
# replication to their apply workers), so a read in any region started
# after the commit returned sees it; and a read in a region that has not
# applied the write region's last commit waits for it, or fails after
# cosmosrep.session_wait_timeout.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b c));
my ($ra, $rb, $rc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', 'CREATE TABLE accounts (id int PRIMARY KEY, balance int)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('accounts')");
$_->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die for ($rb, $rc);

sub writers
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(region_name, ',' ORDER BY region_name) FROM cosmosrep.regions WHERE accepts_writes");
}

sub set_conf
{
	my ($node, $conf) = @_;
	$node->append_conf('postgresql.conf', $conf);
	$node->reload;
	return;
}

is(writers($_), 'a,b,c', $_->name . ': multi-region writes are on by default') for @nodes;

# strong while several regions write: refused, in the session that asks
set_conf($rc, "cosmosrep.default_consistency = 'strong'");
$rc->poll_query_until('postgres', 'SHOW cosmosrep.default_consistency', 'strong') or die;
my ($ret, $out, $err) = $rc->psql('postgres', 'SELECT count(*) FROM accounts');
like($err,
	qr/ERROR:  consistency level "strong" needs a single write region\nDETAIL:  3 regions accept writes\.\nHINT:  Call cosmosrep\.set_multiple_write_regions\(false\), or relax cosmosrep\.consistency\./,
	'strong is refused while three regions accept writes');
($ret, $out, $err) = $rc->psql('postgres',
	"SET cosmosrep.consistency = 'session'; SELECT cosmosrep.set_multiple_write_regions(true)");
like($err, qr/ERROR:  multi-region writes cannot be switched on while the consistency level is "strong"/,
	'switching multi-region writes on is refused under strong');
is($rc->safe_psql('postgres', "SET cosmosrep.consistency = 'session'; SELECT count(*) FROM accounts"),
	'0', 'a session that relaxes the level reads as before');

# one write region, set in b for the whole group
$rb->safe_psql('postgres', "SELECT cosmosrep.set_multiple_write_regions(false, 'a')");
ok(wait_for_value($_, q{SELECT string_agg(region_name, ',') FROM cosmosrep.regions WHERE accepts_writes}, 'a'),
	$_->name . ': only a accepts writes')
  for @nodes;
($ret, $out, $err) = $rb->psql('postgres', 'INSERT INTO accounts VALUES (1, 10)');
like($err,
	qr/ERROR:  region "b" does not accept writes to multi-region table "accounts"\nDETAIL:  Multi-region writes are switched off\./,
	'b refuses a write');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM accounts'), '0', 'and wrote nothing');
$ra->safe_psql('postgres', 'INSERT INTO accounts VALUES (1, 10)');
ok(wait_for_value($_, 'SELECT count(*) FROM accounts', '1'),
	$_->name . ': the write region writes, and its writes reach this region')
  for ($rb, $rc);
($ret, $out, $err) = $rb->psql('postgres', 'UPDATE accounts SET balance = 0');
like($err, qr/region "b" does not accept writes/, 'b refuses an update too');
($ret, $out, $err) = $rb->psql('postgres', 'TRUNCATE accounts');
like($err, qr/region "b" does not accept writes/, 'and a truncate');

# strong everywhere; without synchronous replication a commit is refused
set_conf($_, "cosmosrep.default_consistency = 'strong'\ncosmosrep.session_wait_timeout = '2s'")
  for ($ra, $rb);
$_->poll_query_until('postgres', 'SHOW cosmosrep.default_consistency', 'strong')
  or die for ($ra, $rb);
($ret, $out, $err) = $ra->psql('postgres', 'UPDATE accounts SET balance = 11 WHERE id = 1');
like($err, qr/ERROR:  consistency level "strong" needs synchronous_standby_names/,
	'a strong commit without synchronous replication to the regions is refused');
is($ra->safe_psql('postgres', 'SELECT balance FROM accounts'), '10', 'and changes nothing');

# the write region waits for every region to apply each commit
set_conf($ra, "synchronous_standby_names = 'ANY 2 (cosmosrep_b, cosmosrep_c)'");
$ra->poll_query_until('postgres', 'SHOW synchronous_standby_names',
	'ANY 2 (cosmosrep_b, cosmosrep_c)') or die;
my ($stale, $stale_eventual) = (0, 0);
for my $i (1 .. 20)
{
	$ra->safe_psql('postgres', "UPDATE accounts SET balance = $i WHERE id = 1");
	# no polling: each read starts after the commit returned; an eventual
	# read does not wait, so it sees what the commit's wait made sure of
	for my $node ($rb, $rc)
	{
		$stale_eventual++ if $node->safe_psql('postgres',
			"SET cosmosrep.consistency = 'eventual'; SELECT balance FROM accounts") ne $i;
		$stale++ if $node->safe_psql('postgres', 'SELECT balance FROM accounts') ne $i;
	}
}
is($stale_eventual, 0,
	'every read in b and c, even eventual, started after a commit in a returned sees it (20 commits)');
is($stale, 0, 'every read in b and c started after a commit in a returned sees it (20 commits)');

# the commit waits for the regions: with c's link from a paused, a commit
# in a does not return until c applies it
$rc->safe_psql('postgres',
	"SET cosmosrep.consistency = 'eventual'; SELECT cosmosrep.pause_region('a')");
$rc->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die;
my $committer = $ra->background_psql('postgres');
$committer->query_until(qr/committing/,
	"\\echo committing\nUPDATE accounts SET balance = 50 WHERE id = 1;\n\\echo committed\n");
sleep 2;
is($ra->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'}),
	'1', 'a commit in a waits while c has not applied it');
$rc->safe_psql('postgres',
	"SET cosmosrep.consistency = 'eventual'; SELECT cosmosrep.resume_region('a')");
like($committer->query_until(qr/committed/, ''), qr/committed/,
	'and returns once c has applied it');
$committer->quit;
is($rc->safe_psql('postgres', "SET cosmosrep.consistency = 'eventual'; SELECT balance FROM accounts"),
	'50', 'c has the write when the commit returns');

# a quorum of one: b may lag; a strong read there waits for a's last commit
set_conf($ra, "synchronous_standby_names = 'ANY 1 (cosmosrep_b, cosmosrep_c)'");
$ra->poll_query_until('postgres', 'SHOW synchronous_standby_names',
	'ANY 1 (cosmosrep_b, cosmosrep_c)') or die;
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die;
$ra->safe_psql('postgres', 'UPDATE accounts SET balance = 100 WHERE id = 1');
is($rc->safe_psql('postgres', 'SELECT balance FROM accounts'), '100', 'c, in the quorum, has it');
($ret, $out, $err) = $rb->psql('postgres', 'SELECT balance FROM accounts');
like($err, qr/ERROR:  session not available in this region\nDETAIL:  Region "b" is behind: it has applied region "a" up to/,
	'a strong read in b, which has not applied it, fails after the timeout');
my $reader = $rb->background_psql('postgres', on_error_stop => 0);
$reader->query_until(qr/started/, "\\echo started\nSET cosmosrep.session_wait_timeout = '60s';\n");
$reader->query_until(qr/waiting/, "\\echo waiting\nSELECT 'read ' || balance FROM accounts;\n");
$rb->safe_psql('postgres',
	"SET cosmosrep.consistency = 'eventual'; SELECT cosmosrep.resume_region('a')");
like($reader->query_until(qr/read \d+/, ''), qr/read 100/,
	'a strong read that waits sees the commit once b has applied it');
$reader->quit;

# back to multi-region writes, under a weaker level
set_conf($_, "cosmosrep.default_consistency = 'session'\nsynchronous_standby_names = ''")
  for @nodes;
$_->poll_query_until('postgres', 'SHOW cosmosrep.default_consistency', 'session')
  or die for @nodes;
$rc->safe_psql('postgres', 'SELECT cosmosrep.set_multiple_write_regions(true)');
ok(wait_for_value($_, q{SELECT count(*) FROM cosmosrep.regions WHERE accepts_writes}, '3'),
	$_->name . ': every region accepts writes again')
  for @nodes;
$rb->safe_psql('postgres', 'INSERT INTO accounts VALUES (2, 20)');
ok(wait_for_value($_, 'SELECT count(*) FROM accounts', '2'),
	$_->name . ': b writes again, and its write reaches this region')
  for ($ra, $rc);

$_->stop for @nodes;
done_testing();
