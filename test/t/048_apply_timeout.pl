# cosmosrep.apply_timeout, as core's wal_receiver_timeout: an apply worker
# whose peer is idle asks it for a reply at half the timeout and keeps its
# connection; one whose peer goes silent (its walsender stopped with
# SIGSTOP: the connection stays open, nothing arrives) drops the
# connection after the timeout, with the error in the log and
# replication_status, and streams again once the peer answers.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my ($east, $west) = make_group(qw(east west));
for my $node ($east, $west)
{
	$node->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
}
$east->safe_psql('postgres', "SELECT cosmosrep.enable_table('t')");
$west->safe_psql('postgres', "ALTER SYSTEM SET cosmosrep.apply_timeout = '2s'");
$west->reload;

my $streaming = "SELECT state = 'streaming' AND last_error IS NULL"
  . " FROM cosmosrep.replication_status WHERE source_region = 'east'";
wait_for_value($west, $streaming, 't') or die 'west does not stream from east';
my $worker = $west->safe_psql('postgres',
	"SELECT worker_pid FROM cosmosrep.replication_status WHERE source_region = 'east'");
# the worker sets its connection's keepalives from the setting when it
# connects: begin with one that connected under 2s
$west->safe_psql('postgres', "SELECT pg_terminate_backend($worker)");
wait_for_value($west,
	"SELECT worker_pid IS NOT NULL AND worker_pid <> $worker AND state = 'streaming'"
	  . " FROM cosmosrep.replication_status WHERE source_region = 'east'", 't')
  or die 'the apply worker did not start again';
$worker = $west->safe_psql('postgres',
	"SELECT worker_pid FROM cosmosrep.replication_status WHERE source_region = 'east'");

# idle for three timeouts: the pings keep the connection
ok(wait_for_value($west,
		"SELECT backend_start < now() - interval '6 s' FROM pg_stat_activity WHERE pid = $worker",
		't'),
	'an idle peer answers the ping and keeps its apply connection for three timeouts');
is($west->safe_psql('postgres',
		"SELECT worker_pid || ',' || coalesce(last_error, '')"
		  . " FROM cosmosrep.replication_status WHERE source_region = 'east'"),
	"$worker,", 'the idle link recorded no error');

# silent: east's walsender for west stops, its connection stays open
my $walsender = $east->safe_psql('postgres',
	"SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'cr_east_west'");
my $offset = -s $west->logfile;
kill 'STOP', $walsender;
ok($west->wait_for_log(
		qr/terminating the connection to region "east" due to timeout/, $offset),
	'a peer silent for cosmosrep.apply_timeout is dropped with "terminating the connection to region "east" due to timeout"');
kill 'CONT', $walsender;

# the link comes back by itself, and its error goes once it applies again
ok(wait_for_value($west,
		"SELECT state FROM cosmosrep.replication_status WHERE source_region = 'east'",
		'streaming'),
	'the link streams again once the peer answers');
$east->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
ok(wait_for_value($west, 'SELECT count(*) FROM t', 1), 'changes flow again after the timeout');
ok(wait_for_value($west, $streaming, 't'), 'the timeout error is cleared once the link applies again');

done_testing();
