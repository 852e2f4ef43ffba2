# Bulk apply: consecutive remote inserts into one table are written in
# batches (apply_batch.c: table_multi_insert, then the index entries with
# partial unique checks, then the tombstones read once per batch), and a
# row that needs the careful path goes that way, in order.  A large
# remote transaction of inserts, interleaved with updates, deletes, a key
# change and inserts that hit existing keys, newer and older tombstones and
# secondary unique collisions, ends alike in both regions with the
# conflicts the row-at-a-time path records; and a kill -9 of the receiving
# region in the middle of a large batched transaction leaves every row
# there exactly once.
#
# The apply worker logs each batch at DEBUG1 ("applied a batch of N
# inserts into ..."), with its running totals of batched rows and of rows
# taken out again and applied one by one; the test reads those lines.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b));
my ($ra, $rb) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE bulk (id int PRIMARY KEY, u int UNIQUE, v text NOT NULL);
		CREATE TABLE crash_t (id int PRIMARY KEY, v int NOT NULL);
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('bulk');
	SELECT cosmosrep.enable_table('crash_t');
});
$rb->poll_query_until('postgres', 'SELECT count(*) = 2 FROM cosmosrep.tables')
  or die 'enable_table did not reach b';

# b logs its batches
$rb->safe_psql('postgres', q{
	ALTER SYSTEM SET log_min_messages = debug1;
	SELECT pg_reload_conf();
});

# the running totals of the last batch line in b's log after $offset
sub batch_totals
{
	my ($offset) = @_;
	my @totals = PostgreSQL::Test::Utils::slurp_file($rb->logfile, $offset)
	  =~ /applied a batch of \d+ inserts into "\w+" \((\d+) batched rows, (\d+) of them applied one by one/g;
	return @totals ? @totals[-2, -1] : (0, 0);
}

##########
# One large remote transaction against what b holds
##########

partition_regions(\@nodes);

# b, before a's transaction (older versions): rows with keys a will insert
# (1000-2999, two batches' worth in a row), rows a's transaction finds deleted here long ago (300-309),
# rows it will find deleted later (200-209, deleted below), and rows of
# other keys holding unique values that a will insert (50000-50009 hold
# the u of a's 15000-15009)
$rb->safe_psql('postgres', q{
	INSERT INTO bulk SELECT g, -g, 'b-old' FROM generate_series(1000, 2999) g;
	INSERT INTO bulk SELECT g, -g, 'b-old' FROM generate_series(200, 209) g;
	INSERT INTO bulk SELECT g, -g, 'b-old' FROM generate_series(300, 309) g;
	DELETE FROM bulk WHERE id BETWEEN 300 AND 309;
	INSERT INTO bulk SELECT g, g - 35000, 'b-collides' FROM generate_series(50000, 50009) g;
});

# a: 20,000 inserts in one transaction, with updates (of the unique column
# too), deletes, a key change and re-inserts of deleted keys among them
$ra->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO bulk SELECT g, g, 'a' FROM generate_series(1, 8000) g;
	UPDATE bulk SET v = 'a-updated' WHERE id BETWEEN 10 AND 19;
	UPDATE bulk SET u = u + 1000000 WHERE id BETWEEN 30 AND 39;
	DELETE FROM bulk WHERE id BETWEEN 40 AND 49;
	UPDATE bulk SET id = id + 100000 WHERE id BETWEEN 50 AND 54;
	INSERT INTO bulk SELECT g, g, 'a' FROM generate_series(8001, 20000) g;
	INSERT INTO bulk SELECT g, g, 'a-again' FROM generate_series(40, 44) g;
	INSERT INTO bulk SELECT g, g, 'a-late' FROM generate_series(20001, 21000) g;
	COMMIT;
});

# b deletes 200-209 after a's transaction: these deletes are newer
$rb->safe_psql('postgres', 'DELETE FROM bulk WHERE id BETWEEN 200 AND 209');

my $offset = -s $rb->logfile;
heal_regions(\@nodes);
ok_all_streaming(\@nodes, 'every link streams after the large transaction');
wait_for_same_table(\@nodes, 'bulk');

my ($batched, $one_by_one) = batch_totals($offset);
cmp_ok($batched, '>=', 20000,
	'b applied the inserts of the large transaction in batches');
cmp_ok($one_by_one, '>=', 2020,
	'the inserts that met an existing key, a newer tombstone or a unique value went the usual way');

my $expected = join(' ',
	'20985',    # 21005 inserted by a, 10 deleted by a, 10 deleted by b
	'1000:1000:a 2000:2000:a 2999:2999:a',
	'15000:15000:a 15009:15009:a');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM bulk) || ' ' ||
		       (SELECT string_agg(id || ':' || u || ':' || v, ' ' ORDER BY id)
		          FROM bulk WHERE id IN (1000, 2000, 2999)) || ' ' ||
		       (SELECT string_agg(id || ':' || u || ':' || v, ' ' ORDER BY id)
		          FROM bulk WHERE id IN (15000, 15009))}),
		$expected,
		$node->name . ": a's newer rows replace b's older rows of the same keys and values");
	is($node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM bulk WHERE id BETWEEN 200 AND 209) || ' ' ||
		       (SELECT count(*) FROM bulk WHERE id BETWEEN 300 AND 309 AND v = 'a') || ' ' ||
		       (SELECT count(*) FROM bulk WHERE id BETWEEN 50000 AND 50009) || ' ' ||
		       (SELECT string_agg(v, ',' ORDER BY id) FROM bulk WHERE id BETWEEN 40 AND 49) || ' ' ||
		       (SELECT count(*) FROM bulk WHERE id BETWEEN 10 AND 19 AND v = 'a-updated') || ' ' ||
		       (SELECT count(*) FROM bulk WHERE id BETWEEN 30 AND 39 AND u = id + 1000000) || ' ' ||
		       (SELECT count(*) FROM bulk WHERE id BETWEEN 100050 AND 100054) || ' ' ||
		       (SELECT count(*) FROM bulk WHERE id BETWEEN 50 AND 54)}),
		'0 10 0 a-again,a-again,a-again,a-again,a-again 10 10 5 0',
		$node->name . ': newer deletes win, older tombstones do not, displaced rows go, and the updates, deletes and key change inside the transaction apply in order');
}
is($rb->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || resolution || ' ' || n, ', ' ORDER BY kind, resolution)
	  FROM (SELECT kind, resolution, count(*) n FROM cosmosrep.conflicts GROUP BY 1, 2) c}),
	# 300-309: a's inserts had not seen b's older deletes (a conflict that
	# the newer insert wins); 200-209: b's newer deletes had not seen a's
	# inserts
	'insert_deleted local_kept 10, insert_deleted remote_applied 10,'
	  . ' insert_exists remote_applied 2000, unique_collision remote_applied 10',
	'b records the conflicts of the rows that went the usual way, as row-at-a-time apply does')
  or diag($rb->safe_psql('postgres', 'SELECT kind, resolution, key FROM cosmosrep.conflicts'));

##########
# A batched row that user code rejects: a unique index on an expression,
# at b only, which apply does not probe (a collision there is an error of
# the change).  The error comes while the batch is written; it counts
# against the row's transaction, not the one after it, so that after
# three attempts that transaction is applied change by change and the row
# waits in the feed, as without batches.
##########

for my $node (@nodes)
{
	$node->safe_psql('postgres', 'CREATE TABLE emails (id int PRIMARY KEY, email text NOT NULL)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('emails')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 3 FROM cosmosrep.tables')
  or die 'enable_table did not reach b';
$rb->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;  -- this region's index only
	CREATE UNIQUE INDEX emails_lower ON emails (lower(email));
	SELECT cosmosrep.pause_region('a');
});
$rb->poll_query_until('postgres', q{
	SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status
	 WHERE source_region = 'a'})
  or die 'b did not pause';
$rb->safe_psql('postgres', "INSERT INTO emails VALUES (9000, 'dup\@example.com')");
# the rejected row is in the last, partial batch of its transaction; the
# next transaction begins with an update
$ra->safe_psql('postgres', q{
	INSERT INTO emails
	SELECT g, CASE WHEN g = 1200 THEN 'Dup@Example.com' ELSE 'e' || g || '@example.com' END
	  FROM generate_series(1, 1500) g;
});
$ra->safe_psql('postgres', "UPDATE emails SET email = 'first\@example.com' WHERE id = 1");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
ok($rb->poll_query_until('postgres', q{
		SELECT count(*) FROM cosmosrep.conflict_feed
		 WHERE kind = 'apply_error' AND remote_row->>'id' = '1200'}, '1'),
	'a batched row that a unique expression index rejects goes to the feed after three attempts');
ok($rb->poll_query_until('postgres',
		"SELECT email FROM emails WHERE id = 1", 'first@example.com'),
	'and the transactions after it are applied');
is($rb->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE id BETWEEN 1 AND 1500)
		  FROM emails}),
	'1500 1499', 'b holds every row of a but the rejected one, and its own');
is($rb->safe_psql('postgres', q{
		SELECT state || coalesce(' ' || last_error, '') FROM cosmosrep.replication_status
		 WHERE source_region = 'a'}),
	'streaming', 'the link from a streams with no error once the row waits in the feed');

##########
# kill -9 of b in the middle of a large batched transaction
##########

$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres', q{
	SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status
	 WHERE source_region = 'a'})
  or die 'b did not pause';
$ra->safe_psql('postgres',
	'INSERT INTO crash_t SELECT g, g FROM generate_series(1, 300000) g');

$offset = -s $rb->logfile;
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
$rb->wait_for_log(qr/applied a batch of \d+ inserts into "crash_t"/, $offset);
crash_region($rb);
my $restart = -s $rb->logfile;
ok($rb->wait_for_log(qr/applied a batch of \d+ inserts into "crash_t"/, $restart),
	'after the crash b applies the large transaction again: the kill came before its commit');
ok($rb->poll_query_until('postgres', 'SELECT count(*) = 300000 FROM crash_t'),
	'b holds the large transaction once it is applied again');
is($rb->safe_psql('postgres',
		'SELECT count(*) || \' \' || count(DISTINCT id) || \' \' || sum(v) FROM crash_t'),
	'300000 300000 45000150000', 'every row of the transaction is in b exactly once');

# a write of b after the crash reaches a, whose link from b then shows no
# error of the time b was down
$rb->safe_psql('postgres', 'INSERT INTO crash_t VALUES (300001, 0)');
wait_for_same_table(\@nodes, 'crash_t');
ok_all_streaming(\@nodes, 'every link streams after the crash');

$_->stop for @nodes;
done_testing();
