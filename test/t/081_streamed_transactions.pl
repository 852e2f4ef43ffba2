# Large transactions are streamed: once a transaction outgrows the
# sending region's logical_decoding_work_mem, its walsender sends it while
# it runs and the receiving region applies it as it arrives, invisible
# until the sender commits, discarded when the sender aborts or crashes,
# applied exactly once when the receiver is killed in the middle, with the
# same conflicts as a transaction sent whole.
#
# logical_decoding_work_mem is 1MB in the sending region (east), so that a
# transaction of some tens of thousands of rows is streamed in blocks of
# about 1MB of changes; the walsender's memory then stays near its fresh
# size whatever the transaction's size (the reorder buffer holds at most
# logical_decoding_work_mem of changes, then streams them), and the
# latency figures scale with the number of rows.  Sizes: COSMOSREP_STREAM_ROWS
# (default 200,000) for the latency figure.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $rows = $ENV{COSMOSREP_STREAM_ROWS} // 200_000;

# the memory figures of a process, in kB, or undef once it is gone
sub proc_memory
{
	my ($pid) = @_;
	my %mem;

	return undef unless $pid;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		$mem{$1} = $2 if /^(VmRSS|VmHWM):\s+(\d+) kB/;
	}
	close $fh;
	return keys %mem ? \%mem : undef;
}

sub walsender_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_replication WHERE application_name LIKE 'cosmosrep%' LIMIT 1");
}

# how many transactions east's walsender for west has streamed so far
sub streamed_txns
{
	my ($east) = @_;
	return $east->safe_psql('postgres',
		"SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name LIKE 'cr_east_west%'");
}

# the size of west's table on disk, which grows while rows not yet
# committed are written into it
sub heap_size
{
	my ($west) = @_;
	return $west->safe_psql('postgres', "SELECT pg_relation_size('big')");
}

my ($east, $west) = make_group(qw(east west));
$east->safe_psql('postgres', q{
	ALTER SYSTEM SET logical_decoding_work_mem = '1MB';
	SELECT pg_reload_conf();
});
for my $node ($east, $west)
{
	$node->safe_psql('postgres',
		'CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, pad text)');
}
$east->safe_psql('postgres', "SELECT cosmosrep.enable_table('big')");
ok(wait_for_value($west,
		"SELECT count(*) FROM cosmosrep.tables WHERE table_name = 'big'::regclass", '1'),
	'the table is multi-region in both regions');
$east->safe_psql('postgres', "INSERT INTO big VALUES (0, 0, 'warm-up')");
ok(wait_for_value($west, 'SELECT count(*) FROM big', '1'), 'a first row reaches west');
ok(wait_for_value($east, "SELECT setting FROM pg_settings WHERE name = 'logical_decoding_work_mem'",
		'1024'), "east's logical_decoding_work_mem is 1MB");

##########
# One large transaction: streamed, applied as it runs, committed in west
# soon after east's commit
##########

my $wal_pid = walsender_pid($east);
my $fresh = proc_memory($wal_pid);
ok($fresh, "east's walsender for west is found by pid");
my $streamed_before = streamed_txns($east);

# sample the walsender in the background of the transaction: a second
# session polls its memory while the transaction runs
my $t0 = time;
my $writer = $east->background_psql('postgres');
$writer->query_safe('BEGIN');
$writer->query_safe(
	"INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(1, $rows) g");
my $t_body = time;
my $grown = heap_size($west);
$writer->query_safe('COMMIT');
my $t1 = time;
my $peak = proc_memory($wal_pid);
my $t2;
while (time - $t1 < 300)
{
	if ($west->safe_psql('postgres', "SELECT count(*) FROM big WHERE id BETWEEN 1 AND $rows") == $rows)
	{
		$t2 = time;
		last;
	}
	sleep 0.05;
}
$peak = proc_memory($wal_pid) // $peak;
my $duration = $t1 - $t0;
ok(defined $t2, "west applies the $rows-row transaction");
$t2 //= time;
diag(sprintf('%d rows in one transaction: %.2f s at east (%.0f rows/s), west committed %.2f s after east (%.2f of the duration; %.0f rows/s from east\'s BEGIN to west\'s commit); west\'s table had %d bytes before east committed; walsender VmRSS fresh %.1f MB, VmHWM %.1f MB',
	$rows, $duration, $rows / $duration, $t2 - $t1, ($t2 - $t1) / $duration,
	$rows / ($t2 - $t0), $grown, $fresh->{VmRSS} / 1024, ($peak->{VmHWM} // 0) / 1024));
cmp_ok(streamed_txns($east), '>', $streamed_before,
	"east's walsender streamed the large transaction while it ran");
cmp_ok($grown, '>', 8192 * 10,
	"west wrote rows of the large transaction before east committed it");
cmp_ok($t2 - $t1, '<', 0.5 * $duration,
	"west commits the large transaction within half of its duration after east's commit");
# logical_decoding_work_mem (1MB) plus a fixed margin of 24MB for the
# walsender's own allocations (tuple buffers, the output buffer)
cmp_ok($peak->{VmHWM} // 0, '<=', $fresh->{VmRSS} + 1024 + 24 * 1024,
	"the walsender's memory stays under logical_decoding_work_mem plus a fixed margin");
wait_for_same_table([ $east, $west ], 'big');

##########
# Apply rate: one large streamed transaction against the same rows in
# transactions of 20,000 sent whole (the bulk figure of bench/run), each
# decoded and applied after west resumes
##########

# the CPU seconds a process has used (user and system)
sub cpu_secs
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return 0;
	my $stat = <$fh>;
	close $fh;
	my @f = split ' ', ($stat =~ s/^.*\) //r);
	return ($f[11] + $f[12]) / 100;
}

sub worker_pid_of
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT worker_pid FROM cosmosrep.replication_status WHERE source_region = 'east'");
}

sub pause_east_in_west
{
	$west->safe_psql('postgres', "SELECT cosmosrep.pause_region('east')");
	return wait_for_value($west,
		"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status"
		  . " WHERE source_region = 'east'", 't');
}

# resume, and the seconds until west holds row $last
sub resume_until
{
	my ($last) = @_;
	my $start = time;
	$west->safe_psql('postgres', "SELECT cosmosrep.resume_region('east')");
	$west->poll_query_until('postgres', "SELECT count(*) = 1 FROM big WHERE id = $last")
	  or return undef;
	my $secs = time - $start;
	note(sprintf('cpu seconds: apply worker %.2f, walsender %.2f (pid %d)',
		cpu_secs(worker_pid_of($west)), cpu_secs(walsender_pid($east)), walsender_pid($east)));
	return $secs;
}

my $rate_rows = $rows;
$east->safe_psql('postgres', q{
	CREATE PROCEDURE insert_batches(first int, n int, batch int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR b IN 0 .. n / batch - 1 LOOP
			INSERT INTO big SELECT g, g, md5(g::text)
			  FROM generate_series(first + b * batch, first + (b + 1) * batch - 1) g;
			COMMIT;
		END LOOP;
	END $$});

# Each figure is the better of two rounds, bulk then streamed: on a
# shared machine one round of either may be slowed by a third of its time.
my ($bulk_secs, $streamed_secs);
for my $round (0, 1)
{
	my $base = 20000000 + $round * 2 * $rate_rows;

	$west->safe_psql('postgres', q{
		ALTER SYSTEM SET cosmosrep.apply_streaming = off;
		SELECT pg_reload_conf();
	});
	ok(pause_east_in_west(), "west pauses east for the bulk figure (round $round)");
	$streamed_before = streamed_txns($east);
	$east->safe_psql('postgres', "CALL insert_batches($base + 1, $rate_rows, 20000)");
	my $secs = resume_until($base + $rate_rows);
	ok(defined $secs, "west applies the transactions of 20,000 rows (round $round)");
	is(streamed_txns($east), $streamed_before,
		"a worker that does not ask for streaming receives whole transactions (round $round)");
	$bulk_secs = $secs if defined $secs && (!defined $bulk_secs || $secs < $bulk_secs);

	$west->safe_psql('postgres', q{
		ALTER SYSTEM RESET cosmosrep.apply_streaming;
		SELECT pg_reload_conf();
	});
	ok(pause_east_in_west(), "west pauses east for the streamed figure (round $round)");
	$streamed_before = streamed_txns($east);
	$base += $rate_rows;
	$east->safe_psql('postgres',
		"INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series($base + 1, $base + $rate_rows) g");
	$secs = resume_until($base + $rate_rows);
	ok(defined $secs, "west applies the large transaction (round $round)");
	$streamed_secs = $secs if defined $secs && (!defined $streamed_secs || $secs < $streamed_secs);
	cmp_ok(streamed_txns($east), '>', $streamed_before, "it was streamed (round $round)");
}
$bulk_secs //= 1;
$streamed_secs //= 1e9;
diag(sprintf('apply of %d rows, the better of two rounds: in transactions of 20,000 sent whole %.2f s (%.0f rows/s), in one streamed transaction %.2f s (%.0f rows/s, %.2f of the bulk rate)',
	$rate_rows, $bulk_secs, $rate_rows / $bulk_secs, $streamed_secs,
	$rate_rows / $streamed_secs, $bulk_secs / $streamed_secs));
cmp_ok($bulk_secs / $streamed_secs, '>=', 0.8,
	'west applies one large streamed transaction at 0.8 of the bulk rate or better');

##########
# A streamed transaction that aborts leaves nothing
##########

$streamed_before = streamed_txns($east);
my $size_before = heap_size($west);
$writer->query_safe('BEGIN');
$writer->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(1000001, 1050000) g');
ok($west->poll_query_until('postgres', "SELECT pg_relation_size('big') > $size_before"),
	'west applies the open transaction as it arrives');
is($west->safe_psql('postgres', 'SELECT count(*) FROM big WHERE id BETWEEN 1000001 AND 1050000'), '0',
	'none of its rows is visible in west before east commits');
cmp_ok(streamed_txns($east), '>', $streamed_before, 'east streamed it');
$writer->query_safe('ROLLBACK');
$east->safe_psql('postgres', "INSERT INTO big VALUES (2000001, 1, 'after the abort')");
ok(wait_for_value($west, 'SELECT count(*) FROM big WHERE id = 2000001', '1'),
	'replication goes on after the streamed transaction aborted');
is($west->safe_psql('postgres', 'SELECT count(*) FROM big WHERE id BETWEEN 1000001 AND 1050000'), '0',
	'the aborted streamed transaction left nothing in west');

##########
# kill -9 of west in the middle of a streamed transaction: applied once
##########

# every application of a row in west leaves an audit row, which a crash
# rolls back with it
$west->safe_psql('postgres', q{
	CREATE TABLE applied (id int);
	CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.applied VALUES (NEW.id);
		RETURN NEW;
	END $$;
	CREATE TRIGGER audit BEFORE INSERT OR UPDATE ON big
		FOR EACH ROW EXECUTE FUNCTION audit();
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE big ENABLE ALWAYS TRIGGER audit;
});
$size_before = heap_size($west);
$writer->query_safe('BEGIN');
$writer->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(3000001, 3040000) g');
ok($west->poll_query_until('postgres', "SELECT pg_relation_size('big') > $size_before"),
	'west applies the open transaction as it arrives');
crash_region($west);
$writer->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(3040001, 3060000) g');
$writer->query_safe('COMMIT');
ok(wait_for_value($west, 'SELECT count(*) FROM big WHERE id BETWEEN 3000001 AND 3060000', '60000'),
	'west applies the transaction after its crash');
is($west->safe_psql('postgres',
		'SELECT count(*) || \' \' || count(DISTINCT id) FROM applied WHERE id BETWEEN 3000001 AND 3060000'),
	'60000 60000', 'every row of it was applied exactly once');
$west->safe_psql('postgres',
	'SET cosmosrep.ddl_replication = warn; ALTER TABLE big DISABLE TRIGGER audit');
wait_for_same_table([ $east, $west ], 'big');

##########
# kill -9 of east in the middle of a streamed transaction: discarded
##########

$size_before = heap_size($west);
$writer->query_safe('BEGIN');
$writer->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(4000001, 4040000) g');
ok($west->poll_query_until('postgres', "SELECT pg_relation_size('big') > $size_before"),
	'west applies the open transaction as it arrives');
$writer->quit;
crash_region($east);
$east->safe_psql('postgres', "INSERT INTO big VALUES (4100001, 1, 'after the crash')");
ok(wait_for_value($west, 'SELECT count(*) FROM big WHERE id = 4100001', '1'),
	'replication goes on after east crashed in the middle of a streamed transaction');
is($west->safe_psql('postgres', 'SELECT count(*) FROM big WHERE id BETWEEN 4000001 AND 4040000'), '0',
	'the transaction cut short by the crash left nothing in west');
wait_for_same_table([ $east, $west ], 'big');

##########
# Two streamed transactions at once, small ones in between, and
# subtransactions rolled back in both: the first is applied as it
# arrives, the second spilled and applied at its commit, the small ones
# after the first; every region ends alike
##########

my $first = $east->background_psql('postgres');
my $second = $east->background_psql('postgres');
$size_before = heap_size($west);
$first->query_safe('BEGIN');
$first->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(6000001, 6030000) g');
ok($west->poll_query_until('postgres', "SELECT pg_relation_size('big') > $size_before"),
	'west applies the first open transaction as it arrives');
$second->query_safe('BEGIN');
$second->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(6100001, 6130000) g');
$east->safe_psql('postgres', "INSERT INTO big VALUES (6200001, 1, 'small, between')");
$second->query_safe('SAVEPOINT s');
$second->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(6130001, 6160000) g');
$second->query_safe('ROLLBACK TO SAVEPOINT s');
$second->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(6160001, 6170000) g');
$second->query_safe('COMMIT');
$east->safe_psql('postgres', "INSERT INTO big VALUES (6200002, 1, 'small, after the second')");
$first->query_safe('SAVEPOINT f');
$first->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(6030001, 6060000) g');
$first->query_safe('ROLLBACK TO SAVEPOINT f');
$first->query_safe(
	'UPDATE big SET v = -v WHERE id BETWEEN 6000001 AND 6000100');
$first->query_safe('COMMIT');
$first->quit;
$second->quit;
$east->safe_psql('postgres', "INSERT INTO big VALUES (6200003, 1, 'small, after both')");
ok(wait_for_value($west, 'SELECT count(*) FROM big WHERE id = 6200003', '1'),
	'west applies what followed the two streamed transactions');
is($west->safe_psql('postgres',
		'SELECT count(*) FILTER (WHERE id BETWEEN 6000001 AND 6030000) || \' \' ||'
		  . ' count(*) FILTER (WHERE id BETWEEN 6030001 AND 6060000) || \' \' ||'
		  . ' count(*) FILTER (WHERE id BETWEEN 6100001 AND 6130000) || \' \' ||'
		  . ' count(*) FILTER (WHERE id BETWEEN 6130001 AND 6160000) || \' \' ||'
		  . ' count(*) FILTER (WHERE id BETWEEN 6160001 AND 6170000) || \' \' ||'
		  . ' count(*) FILTER (WHERE id BETWEEN 6200001 AND 6200003) || \' \' ||'
		  . ' count(*) FILTER (WHERE id BETWEEN 6000001 AND 6000100 AND v < 0)'
		  . ' FROM big'),
	'30000 0 30000 0 10000 3 100',
	'west holds both streamed transactions without their rolled-back subtransactions, and the small ones');
wait_for_same_table([ $east, $west ], 'big');

##########
# A streamed transaction that changes a table's columns after a small
# transaction that wrote the table is waiting: applied at its commit
# instead, after the small one
##########

for my $node ($east, $west)
{
	$node->safe_psql('postgres', 'CREATE TABLE side (id int PRIMARY KEY, v int)');
}
$east->safe_psql('postgres', "SELECT cosmosrep.enable_table('side')");
$east->safe_psql('postgres', 'INSERT INTO side VALUES (1, 1)');
ok(wait_for_value($west, 'SELECT count(*) FROM side', '1'), 'the side table reaches west');
my $log_offset = -s $west->logfile;
my $migrate = $east->background_psql('postgres');
$size_before = heap_size($west);
$migrate->query_safe('BEGIN');
$migrate->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(7000001, 7030000) g');
ok($west->poll_query_until('postgres', "SELECT pg_relation_size('big') > $size_before"),
	'west applies the migrating transaction as it arrives');
$east->safe_psql('postgres', 'INSERT INTO side VALUES (2, 2)');
$migrate->query_safe('ALTER TABLE side ADD COLUMN extra int');
$migrate->query_safe(
	'INSERT INTO side SELECT g, g, g FROM generate_series(3, 20000) g');
$migrate->query_safe('COMMIT');
$migrate->quit;
ok(wait_for_value($west, 'SELECT count(*) FROM side', '20000'),
	'west applies the transaction that changed the columns');
ok($west->log_contains(
		qr/ERROR:  streamed transaction \d+ of region "east" changes the columns of a table while transactions it must follow wait/,
		$log_offset),
	'west stops applying it as it arrives, with the reason in its log');
ok($west->log_contains(
		qr/LOG:  cosmosrep applies streamed transaction \d+ of region "east" at its commit/, $log_offset),
	'the next worker applies it at its commit');
wait_for_same_table([ $east, $west ], 'side');
wait_for_same_table([ $east, $west ], 'big');

##########
# A streamed transaction that truncates a table after a small transaction
# wrote it: applied at its commit instead, so the small transaction's row
# is no conflict with the truncate
##########

for my $node ($east, $west)
{
	$node->safe_psql('postgres', 'CREATE TABLE side2 (id int PRIMARY KEY, v int)');
}
$east->safe_psql('postgres', "SELECT cosmosrep.enable_table('side2')");
$east->safe_psql('postgres', 'INSERT INTO side2 VALUES (1, 1)');
ok(wait_for_value($west, 'SELECT count(*) FROM side2', '1'), 'the second side table reaches west');
$log_offset = -s $west->logfile;
my $side2_mark = $west->safe_psql('postgres', 'SELECT coalesce(max(conflict_id), 0) FROM cosmosrep.conflict');
my $truncator = $east->background_psql('postgres');
$size_before = heap_size($west);
$truncator->query_safe('BEGIN');
$truncator->query_safe(
	'INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(7100001, 7130000) g');
ok($west->poll_query_until('postgres', "SELECT pg_relation_size('big') > $size_before"),
	'west applies the truncating transaction as it arrives');
$east->safe_psql('postgres', 'INSERT INTO side2 VALUES (2, 2)');
$truncator->query_safe('TRUNCATE side2');
$truncator->query_safe('INSERT INTO side2 VALUES (3, 3)');
$truncator->query_safe('COMMIT');
$truncator->quit;
ok(wait_for_value($west, 'SELECT string_agg(id::text, \',\') FROM side2', '3'),
	'west holds what the truncating transaction left');
ok($west->log_contains(
		qr/ERROR:  streamed transaction \d+ of region "east" truncates a table while transactions it must follow wait/,
		$log_offset),
	'west stops applying it as it arrives, with the reason in its log');
is($west->safe_psql('postgres',
		"SELECT count(*) FROM cosmosrep.conflict WHERE conflict_id > $side2_mark AND relid = 'side2'::regclass"),
	'0', 'the row written before the truncate is no conflict in west');
wait_for_same_table([ $east, $west ], 'side2');

##########
# Conflicts inside a streamed transaction are decided as in one sent whole
##########

# both directions paused: west updates two rows, then east updates them
# again (newer) in a streamed transaction (row 10) and in a small one
# (row 20); each conflict is an update_update that east's write wins
for my $pair ([ $west, 'east' ], [ $east, 'west' ])
{
	my ($node, $source) = @$pair;
	$node->safe_psql('postgres', "SELECT cosmosrep.pause_region('$source')");
	ok(wait_for_value($node,
			"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status"
			  . " WHERE source_region = '$source'", 't'),
		$node->name . " pauses $source");
}
my $mark = $west->safe_psql('postgres', 'SELECT coalesce(max(conflict_id), 0) FROM cosmosrep.conflict');
$west->safe_psql('postgres', 'UPDATE big SET v = -1 WHERE id IN (10, 20)');
$streamed_before = streamed_txns($east);
$east->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(5000001, 5040000) g;
	UPDATE big SET v = -2 WHERE id = 10;
	COMMIT;
	UPDATE big SET v = -2 WHERE id = 20;
});
for my $pair ([ $west, 'east' ], [ $east, 'west' ])
{
	my ($node, $source) = @$pair;
	$node->safe_psql('postgres', "SELECT cosmosrep.resume_region('$source')");
}
wait_for_same_table([ $east, $west ], 'big');
cmp_ok(streamed_txns($east), '>', $streamed_before, 'east streamed the transaction with the conflict');
# (east's update of row 10 comes after the streamed inserts, so that its
# version is newer than west's however coarse the clock)
is($west->safe_psql('postgres', 'SELECT string_agg(v::text, \',\' ORDER BY id) FROM big WHERE id IN (10, 20)'),
	'-2,-2', "east's newer updates win in west, streamed or not");
note($west->safe_psql('postgres',
		"SELECT kind, resolution, local_version, remote_version, detected_at FROM cosmosrep.conflict"
		  . " WHERE conflict_id > $mark"));
is($west->safe_psql('postgres',
		"SELECT string_agg(kind || ' ' || resolution || ' ' || (remote_version > local_version), ',' ORDER BY remote_version)"
		  . " FROM cosmosrep.conflict WHERE conflict_id > $mark"),
	'update_update remote_applied true,update_update remote_applied true',
	'west records the conflict of the streamed transaction as that of the small one');

##########
# A resolver inside a streamed transaction: the arbiter calls it for a
# conflict of a streamed transaction as for one of a small transaction
##########

my $arbiter_name = $east->safe_psql('postgres', 'SELECT cosmosrep.arbiter()');
my ($arb, $other) = $arbiter_name eq 'east' ? ($east, $west) : ($west, $east);
my $other_name = $other->name;
$other->safe_psql('postgres', q{
	ALTER SYSTEM SET logical_decoding_work_mem = '1MB';
	SELECT pg_reload_conf();
});
for my $node ($east, $west)
{
	# the resolver adds both writes' values
	$node->safe_psql('postgres', q{
		CREATE TABLE scores (id int PRIMARY KEY, v int NOT NULL);
		CREATE FUNCTION add_scores(incoming scores, existing scores,
								   is_tombstone boolean, conflicting scores[])
		RETURNS scores LANGUAGE plpgsql AS $$
		DECLARE
			kept public.scores;
		BEGIN
			kept := incoming;
			kept.v := incoming.v + existing.v;
			RETURN kept;
		END $$;
	});
}
$arb->safe_psql('postgres',
	"SELECT cosmosrep.enable_table('scores', policy => 'custom', resolver => 'add_scores')");
$arb->safe_psql('postgres', 'INSERT INTO scores VALUES (1, 0), (2, 0)');
ok(wait_for_value($other, 'SELECT count(*) FROM scores', '2'), 'the scores reach the other region');
for my $pair ([ $west, 'east' ], [ $east, 'west' ])
{
	my ($node, $source) = @$pair;
	$node->safe_psql('postgres', "SELECT cosmosrep.pause_region('$source')");
	ok(wait_for_value($node,
			"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status"
			  . " WHERE source_region = '$source'", 't'),
		$node->name . " pauses $source again");
}
my $arb_mark = $arb->safe_psql('postgres', 'SELECT coalesce(max(conflict_id), 0) FROM cosmosrep.conflict');
my $slot_streamed = "SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots"
  . " WHERE slot_name LIKE 'cr_${other_name}_${arbiter_name}%'";
my $other_streamed = $other->safe_psql('postgres', $slot_streamed);
$arb->safe_psql('postgres', 'UPDATE scores SET v = 10 WHERE id IN (1, 2)');
$other->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(10000001, 10040000) g;
	UPDATE scores SET v = 5 WHERE id = 1;
	COMMIT;
	UPDATE scores SET v = 5 WHERE id = 2;
});
for my $pair ([ $west, 'east' ], [ $east, 'west' ])
{
	my ($node, $source) = @$pair;
	$node->safe_psql('postgres', "SELECT cosmosrep.resume_region('$source')");
}
ok(wait_for_value($arb, 'SELECT string_agg(v::text, \',\' ORDER BY id) FROM scores', '15,15'),
	'the arbiter resolves the conflict of the streamed transaction and of the small one alike');
ok(wait_for_value($other, 'SELECT string_agg(v::text, \',\' ORDER BY id) FROM scores', '15,15'),
	"the arbiter's resolutions reach the other region");
cmp_ok($other->safe_psql('postgres', $slot_streamed), '>', $other_streamed,
	'the transaction with the conflict was streamed to the arbiter');
is($arb->safe_psql('postgres',
		"SELECT count(*) || ' ' || count(DISTINCT kind || ' ' || resolution)"
		  . " FROM cosmosrep.conflict WHERE conflict_id > $arb_mark AND relid = 'scores'::regclass"),
	'2 1', 'the arbiter records both conflicts the same way');
wait_for_same_table([ $east, $west ], 'scores');
wait_for_same_table([ $east, $west ], 'big');

$_->stop for ($west, $east);
done_testing();
