# A paused region catching up a backlog of small transactions applies
# consecutive ones in one local transaction (a group, at most
# cosmosrep.apply_group_size remote transactions, 100 by default) and still accounts for every remote transaction:
# replication_status counts each one, the table statistics of the
# receiving region show every applied row, and a transaction that arrives
# alone after the backlog is committed at once, not held for a group.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $TRANSACTIONS = 5000;

my ($east, $west) = make_group(qw(east west));
for my $node ($east, $west)
{
	$node->safe_psql('postgres', 'CREATE TABLE g (id int PRIMARY KEY, v int NOT NULL)');
}
$east->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('g');
	CREATE PROCEDURE singles(first int, last int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN first..last LOOP
			INSERT INTO g VALUES (i, i);
			COMMIT;
		END LOOP;
	END $$;
});
wait_for_value($west,
	"SELECT state = 'streaming' FROM cosmosrep.replication_status WHERE source_region = 'east'", 't')
  or die 'west does not stream from east';

# west stops applying east's changes, which pile up as a backlog
sub pause_east
{
	$west->safe_psql('postgres', "SELECT cosmosrep.pause_region('east')");
	wait_for_value($west,
		"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status"
		  . " WHERE source_region = 'east'", 't')
	  or die 'the apply worker did not stop';
	return;
}

my $status = "SELECT transactions_applied || ',' || changes_applied"
  . " FROM cosmosrep.replication_status WHERE source_region = 'east'";
my $commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'";

pause_east();
$east->safe_psql('postgres', "CALL singles(1, $TRANSACTIONS)");
# a backlog is what committed more than a second before it is applied
# (BACKLOG_AGE_MS in apply_worker.c)
sleep(1.5);

my ($txns_before, $changes_before) = split /,/, $west->safe_psql('postgres', $status);
my $commits_before = $west->safe_psql('postgres', $commits);

$west->safe_psql('postgres', "SELECT cosmosrep.resume_region('east')");
ok(wait_for_value($west, 'SELECT count(*) FROM g', $TRANSACTIONS),
	'the backlog of single-row transactions is applied');

my ($txns_after, $changes_after) = split /,/, $west->safe_psql('postgres', $status);
is($txns_after - $txns_before, $TRANSACTIONS,
	'replication_status counts every remote transaction of a group');
is($changes_after - $changes_before, $TRANSACTIONS,
	'replication_status counts every change of a group');

# the worker reports its statistics while it runs, not only when it exits
ok(wait_for_value($west,
		"SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'g'", $TRANSACTIONS),
	'the receiving region\'s table statistics show every applied row');

# Without groups the backlog alone would add one local commit per remote
# transaction, and this test's own queries add more.  A backlog is read a
# millisecond at a time, so its groups fill up to 100 transactions
# (measured: under 100 commits for 5,000 transactions); a tenth leaves
# room for a machine whose walsender sends more slowly.
my $local_commits = $west->safe_psql('postgres', $commits) - $commits_before;
cmp_ok($local_commits, '<', $TRANSACTIONS / 10,
	"a backlog is applied in groups ($local_commits local commits for $TRANSACTIONS transactions)");

# after the backlog, a lone transaction is not held back for a group
my $start = time;
$east->safe_psql('postgres', 'INSERT INTO g VALUES (0, 0)');
$west->poll_query_until('postgres', 'SELECT count(*) = 1 FROM g WHERE id = 0')
  or die 'the lone transaction never arrived';
cmp_ok(time - $start, '<', 10,
	'a transaction that arrives alone is committed without waiting for more');

# A large transaction right after small ones in a backlog: the small ones
# are committed before its first chunk, not held until its last.  The
# large one (2,000 rows, several 64 kB chunks) writes its rows first and
# commits after the small ones, so that the walsender sends its chunks
# right behind them; in west a trigger makes applying it take seconds.
$west->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	CREATE FUNCTION slow_large() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.id > 1000000 THEN
			PERFORM pg_sleep(0.001);
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER slow_large BEFORE INSERT ON g FOR EACH ROW EXECUTE FUNCTION slow_large();
	ALTER TABLE g ENABLE ALWAYS TRIGGER slow_large;
});
pause_east();
my $large = $east->background_psql('postgres');
$large->query_safe('BEGIN');
$large->query_safe('INSERT INTO g SELECT g, g FROM generate_series(1000001, 1002000) g');
$east->safe_psql('postgres', "CALL singles(10001, 10050)");
$large->query_safe('COMMIT');
$large->quit;
sleep(1.5);
$west->safe_psql('postgres', "SELECT cosmosrep.resume_region('east')");
my $seen;
for (1 .. 600)
{
	$seen = $west->safe_psql('postgres',
		'SELECT count(*) FILTER (WHERE id BETWEEN 10001 AND 10050) || \',\''
		  . ' || count(*) FILTER (WHERE id > 1000000) FROM g');
	last if $seen =~ /^50,/;
	sleep(0.05);
}
is($seen, '50,0',
	'small transactions before a large one are visible before the large one commits');
ok(wait_for_value($west, 'SELECT count(*) FROM g WHERE id > 1000000', 2000),
	'the large transaction arrives whole');
$west->safe_psql('postgres', 'DROP TRIGGER slow_large ON g');

# cosmosrep.apply_group_size = 1: each remote transaction of a backlog
# commits in a local transaction of its own (its rows have an xmin of
# their own), where the default groups them
$west->safe_psql('postgres', 'ALTER SYSTEM SET cosmosrep.apply_group_size = 1');
$west->reload;
pause_east();
$east->safe_psql('postgres', 'CALL singles(20001, 20200)');
sleep(1.5);
$west->safe_psql('postgres', "SELECT cosmosrep.resume_region('east')");
ok(wait_for_value($west, 'SELECT count(*) FROM g WHERE id BETWEEN 20001 AND 20200', 200),
	'the backlog arrives with cosmosrep.apply_group_size = 1');
is($west->safe_psql('postgres',
		'SELECT count(DISTINCT xmin::text) FROM g WHERE id BETWEEN 20001 AND 20200'),
	200, 'with cosmosrep.apply_group_size = 1 every remote transaction commits alone');
$west->safe_psql('postgres', 'ALTER SYSTEM RESET cosmosrep.apply_group_size');
$west->reload;

wait_for_same_table([ $east, $west ], 'g');

done_testing();
