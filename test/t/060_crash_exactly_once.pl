# Crashes under write load: kill -9 of the receiving region and of the
# sending region, five times each, while region a commits a steady stream
# of transactions.  Afterwards region b holds every committed change of a
# exactly once: no insert lost or applied twice, every update applied once,
# and replication streams again.
use strict;
use warnings;

use CosmosRep::Test;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $CRASHES = 5;

my ($ra, $rb) = make_group(qw(a b));

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE ledger (id text PRIMARY KEY, amount int NOT NULL);
		CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL);
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('ledger');
	SELECT cosmosrep.enable_table('counter');
	CREATE SEQUENCE ledger_seq;
});
$rb->poll_query_until('postgres', 'SELECT count(*) = 2 FROM cosmosrep.tables')
  or die 'enable_table did not reach b';

# b records every row change its apply worker commits, in a local table
# that is not multi-region: an insert or update applied twice leaves two
# audit rows, a change rolled back by a crash leaves none.  (Apply workers
# run with an empty search_path.  BEFORE triggers, since AFTER triggers do
# not work in the apply worker yet: see the end.)
$rb->safe_psql('postgres', q{
	CREATE TABLE applied (tbl text, op text, id text);
	CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.applied VALUES (TG_TABLE_NAME, TG_OP, NEW.id::text);
		RETURN NEW;
	END $$;
	CREATE TRIGGER audit BEFORE INSERT OR UPDATE ON ledger
		FOR EACH ROW EXECUTE FUNCTION audit();
	CREATE TRIGGER audit BEFORE INSERT OR UPDATE ON counter
		FOR EACH ROW EXECUTE FUNCTION audit();
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE ledger ENABLE ALWAYS TRIGGER audit;
	ALTER TABLE counter ENABLE ALWAYS TRIGGER audit;
});

$ra->safe_psql('postgres', 'INSERT INTO counter VALUES (1, 0)');
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM counter')
  or die 'the counter row did not reach b';

##########
# The load: every transaction inserts a row with a unique key and adds one
# to the counter, so in a the counter equals the number of ledger rows.
# Its rate is capped so that b can keep up between crashes.
##########

my $script = PostgreSQL::Test::Utils::tempdir() . '/ledger.sql';
PostgreSQL::Test::Utils::append_to_file($script, <<'SQL');
\set amount random(1, 1000)
BEGIN;
INSERT INTO ledger VALUES ('a-' || :client_id || '-' || nextval('ledger_seq'), :amount);
UPDATE counter SET n = n + 1 WHERE id = 1;
COMMIT;
SQL

my ($load, $load_out, $load_err);

sub start_load
{
	($load_out, $load_err) = ('', '');
	$load = IPC::Run::start(
		[
			'pgbench', '-n', '-c', '2', '-j', '1', '-T', '300', '-R', '400',
			'-f', $script, '-h', $ra->host, '-p', $ra->port, 'postgres'
		],
		'>', \$load_out, '2>', \$load_err);
	return;
}

sub stop_load
{
	$load->kill_kill if $load;
	$load = undef;
	return;
}

sub counter_of
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT n FROM counter WHERE id = 1');
}

# wait until region a has committed $more transactions of the load more
# than it had when called
sub wait_for_load
{
	my ($more) = @_;
	my $target = counter_of($ra) + $more;
	$ra->poll_query_until('postgres', "SELECT n >= $target FROM counter WHERE id = 1")
	  or die "the load does not make progress in a: $load_err";
	return;
}

# wait until b applies transactions that a committed after the call
sub wait_for_b_applying
{
	my ($what) = @_;
	my $target = counter_of($ra);
	$rb->poll_query_until('postgres', "SELECT n > $target FROM counter WHERE id = 1")
	  or die "b does not apply a's changes $what";
	return;
}

##########
# Kill the receiving region five times
##########

start_load();
wait_for_load(100);
wait_for_b_applying('before the crashes');
for my $i (1 .. $CRASHES)
{
	crash_region($rb);
	wait_for_load(20);
	wait_for_b_applying("after crash $i of b");
}
ok(1, "b crashed $CRASHES times while applying and resumed applying after each crash");

##########
# Kill the sending region five times
##########

for my $i (1 .. $CRASHES)
{
	wait_for_load(50);
	crash_region($ra);
	stop_load();    # its connections died with a
	start_load();
	wait_for_load(20);
	wait_for_b_applying("after crash $i of a");
}
ok(1, "a crashed $CRASHES times under load and b resumed applying after each crash");

wait_for_load(50);
stop_load();

##########
# Every committed change of a is in b exactly once
##########

my ($count_a, $sum_a, $n_a) = split /\|/, $ra->safe_psql('postgres',
	'SELECT (SELECT count(*) FROM ledger), (SELECT sum(amount) FROM ledger), (SELECT n FROM counter)');
is($n_a, $count_a, 'in a every committed transaction kept both its insert and its update');
cmp_ok($count_a, '>=', 300, 'the load committed transactions throughout the crashes');

wait_for_same_table([$ra, $rb], 'ledger');
wait_for_same_table([$ra, $rb], 'counter');

is($rb->safe_psql('postgres', 'SELECT count(*) || \'|\' || sum(amount) FROM ledger'),
	"$count_a|$sum_a", 'b holds every committed insert of a, with the same amounts');
is(counter_of($rb), $n_a, "the counter in b equals the counter in a");

is($rb->safe_psql('postgres', q{
		SELECT count(*), count(DISTINCT id) FROM applied WHERE tbl = 'ledger' AND op = 'INSERT'}),
	"$count_a|$count_a", 'b applied every insert exactly once');
is($rb->safe_psql('postgres', q{
		SELECT count(*) FROM applied WHERE tbl = 'ledger' AND op <> 'INSERT'}),
	'0', 'b never applied an insert as an update');
is($rb->safe_psql('postgres', q{
		SELECT count(*) FROM applied WHERE tbl = 'counter' AND op = 'UPDATE'}),
	$n_a, 'b applied every update of the counter exactly once');

ok($rb->poll_query_until('postgres', q{
		SELECT state = 'streaming' FROM cosmosrep.replication_status WHERE source_region = 'a'}),
	'b streams from a again after the crashes');
ok($ra->poll_query_until('postgres', q{
		SELECT state = 'streaming' FROM cosmosrep.replication_status WHERE source_region = 'b'}),
	'a streams from b again after the crashes');

# and the stream still carries new changes in both directions
$ra->safe_psql('postgres', "INSERT INTO ledger VALUES ('a-after', 1)");
$rb->safe_psql('postgres', "INSERT INTO ledger VALUES ('b-after', 2)");
wait_for_same_table([$ra, $rb], 'ledger');
is($ra->safe_psql('postgres', q{SELECT count(*) FROM ledger WHERE id IN ('a-after', 'b-after')}),
	'2', 'writes after the crashes replicate both ways');

##########
# An AFTER trigger (enabled ALWAYS) fires in the apply worker, and the
# worker neither fails on it nor leaves a relation open
##########

$rb->safe_psql('postgres', q{
	CREATE FUNCTION audit_after() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.applied VALUES (TG_TABLE_NAME, 'AFTER ' || TG_OP, NEW.id::text);
		RETURN NULL;
	END $$;
	CREATE TRIGGER audit_after AFTER INSERT ON ledger
		FOR EACH ROW EXECUTE FUNCTION audit_after();
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE ledger ENABLE ALWAYS TRIGGER audit_after;
});
my $log_offset = -s $rb->logfile;
$ra->safe_psql('postgres', "INSERT INTO ledger VALUES ('a-after-trigger', 3)");
# the apply worker commits one transaction after the other: once the next
# one is visible, the commit of the first one has ended
$ra->safe_psql('postgres', 'UPDATE counter SET n = n + 1 WHERE id = 1');

ok($rb->poll_query_until('postgres', 'SELECT n FROM counter WHERE id = 1', $n_a + 1),
	'b applies the transactions after an AFTER trigger was created');
is($rb->safe_psql('postgres', q{
		SELECT count(*) FROM applied WHERE op = 'AFTER INSERT' AND id = 'a-after-trigger'}),
	'1', 'the apply worker fires an AFTER trigger enabled ALWAYS, once');
ok(!$rb->log_contains(qr/cannot execute SQL without an outer snapshot|relcache reference leak/,
		$log_offset),
	'an AFTER trigger fired by the apply worker runs with a snapshot and leaks no relation');

##########
# An apply that keeps failing is retried with a growing delay, is visible
# in the status view, and loses nothing once the cause is gone
##########

$rb->safe_psql('postgres', q{
	CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.id = 'a-refused' THEN
			RAISE EXCEPTION 'row % refused here', NEW.id;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse BEFORE INSERT ON ledger
		FOR EACH ROW EXECUTE FUNCTION refuse();
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE ledger ENABLE ALWAYS TRIGGER refuse;
});
$log_offset = -s $rb->logfile;
$ra->safe_psql('postgres', "INSERT INTO ledger VALUES ('a-refused', 4)");
ok($rb->poll_query_until('postgres', q{
		SELECT last_error ~ 'row a-refused refused here' FROM cosmosrep.replication_status
		 WHERE source_region = 'a'}),
	'the failing apply shows its error in replication_status');
# five seconds of failing: with a backoff of 1, 2, 4 s there are few attempts
sleep 5;
my @exits = PostgreSQL::Test::Utils::slurp_file($rb->logfile, $log_offset)
  =~ /background worker "cosmosrep apply" \(PID \d+\) exited with exit code 1/g;
cmp_ok(scalar(@exits), '<=', 6,
	'an apply worker that keeps failing is restarted with a growing delay');
is($rb->safe_psql('postgres', "SELECT count(*) FROM ledger WHERE id = 'a-refused'"), '0',
	'the refused change is not applied while it fails');

# after three attempts the change waits in the feed and the stream goes on
ok($rb->poll_query_until('postgres', q{
		SELECT count(*) FROM cosmosrep.conflict_feed
		 WHERE kind = 'apply_error' AND remote_row->>'id' = 'a-refused'}, '1'),
	'a change that keeps failing goes to the feed, whole');
$ra->safe_psql('postgres', "INSERT INTO ledger VALUES ('a-after-refused', 5)");
ok($rb->poll_query_until('postgres',
		"SELECT count(*) FROM ledger WHERE id = 'a-after-refused'", '1'),
	'and the changes behind it are applied');
is($rb->safe_psql('postgres', q{
		SELECT state || coalesce(' ' || last_error, '') FROM cosmosrep.replication_status
		 WHERE source_region = 'a'}),
	'streaming', 'the link shows no error once it applies again');

$rb->safe_psql('postgres', 'DROP TRIGGER refuse ON ledger');
$rb->safe_psql('postgres', q{
	SELECT cosmosrep.reapply_conflict(conflict_id) FROM cosmosrep.conflict_feed
	 WHERE remote_row->>'id' = 'a-refused'});
ok($rb->poll_query_until('postgres',
		"SELECT count(*) FROM ledger WHERE id = 'a-refused'", '1'),
	'once the cause is gone the entry applies again: nothing was skipped');
wait_for_same_table([$ra, $rb], 'ledger');

$_->stop for ($ra, $rb);
done_testing();
