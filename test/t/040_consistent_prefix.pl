# Consistent prefix: the transactions of one region are applied in every
# other region whole and in commit order.  Region a commits 500
# transactions, each of which adds event n, closes event n - 1 and sets a
# one-row counter to n; readers in b and c, one snapshot per read, must
# only ever see a state that a had after some transaction n: the counter,
# the number of events and the highest event all equal n, and exactly the
# last event is open.  The stream from a to b is interrupted and resumed
# midway, which must not break the prefix either.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $TRANSACTIONS = 500;

my ($ra, $rb, $rc) = make_group(qw(a b c));

for my $node ($ra, $rb, $rc)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE events (id int PRIMARY KEY, closed bool NOT NULL, payload text);
		CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL);
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('events');
	SELECT cosmosrep.enable_table('counter');
	INSERT INTO counter VALUES (1, 0);
});
for my $node ($rb, $rc)
{
	$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM counter')
	  or die 'the counter did not reach ' . $node->name;
}

# one read, one snapshot: counter, number of events, highest event, open events
my $observe = q{SELECT (SELECT n FROM counter WHERE id = 1) || ',' || count(*) || ','
	|| coalesce(max(id), 0) || ',' || count(*) FILTER (WHERE NOT closed) FROM events};

# a state of a after some transaction n
sub is_prefix
{
	my ($obs) = @_;
	my ($n, $count, $max, $open) = split /,/, $obs;
	return defined $open && $n == $count && $count == $max && $open == ($n > 0 ? 1 : 0);
}

# c reads in a server-side loop as fast as it can, one snapshot per statement
$rc->safe_psql('postgres', qq{
	CREATE FUNCTION watch_prefix(target int, timeout_s float8) RETURNS text LANGUAGE plpgsql AS \$\$
	DECLARE
		obs text;
		n int;
		reads int := 0;
		bad int := 0;
		first_bad text;
		states int := 0;
		last_n int := -1;
		deadline timestamptz := clock_timestamp() + timeout_s * interval '1 second';
	BEGIN
		LOOP
			SELECT (SELECT c.n FROM public.counter c WHERE c.id = 1), count(*) || ','
			       || coalesce(max(id), 0) || ',' || count(*) FILTER (WHERE NOT closed)
			  INTO n, obs FROM public.events;
			reads := reads + 1;
			IF obs <> n || ',' || n || ',' || (CASE WHEN n > 0 THEN 1 ELSE 0 END) THEN
				bad := bad + 1;
				first_bad := coalesce(first_bad, n || ',' || obs);
			END IF;
			IF n <> last_n THEN
				states := states + 1;
				last_n := n;
			END IF;
			EXIT WHEN n >= target OR clock_timestamp() > deadline;
		END LOOP;
		RETURN reads || ' ' || states || ' ' || bad || ' ' || coalesce(first_bad, '-');
	END \$\$;
});
my $watcher = $rc->background_psql('postgres');
$watcher->query_until(qr/watching/,
	"\\echo watching\nSELECT watch_prefix($TRANSACTIONS, $PostgreSQL::Test::Utils::timeout_default);\n");

# a's transactions; half of them write in the other order
my $writer = $ra->background_psql('postgres');
$writer->query_until(qr/writing/, qq{\\echo writing
DO \$\$
BEGIN
	FOR i IN 1..$TRANSACTIONS LOOP
		IF i % 2 = 0 THEN
			INSERT INTO events VALUES (i, false, 'event ' || i);
			UPDATE events SET closed = true WHERE id = i - 1;
			UPDATE counter SET n = i WHERE id = 1;
		ELSE
			UPDATE counter SET n = i WHERE id = 1;
			UPDATE events SET closed = true WHERE id = i - 1;
			INSERT INTO events VALUES (i, false, 'event ' || i);
		END IF;
		COMMIT;
		PERFORM pg_sleep(0.004);
	END LOOP;
END \$\$;
});

# b reads from here, one statement per read, and interrupts its stream
# from a once midway
my $reader = $rb->background_psql('postgres');
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
my ($reads, @bad, %states) = (0);
my $interrupted = 0;
while (time < $deadline)
{
	my $obs = $reader->query_safe($observe);
	my ($n) = split /,/, $obs;

	$reads++;
	push @bad, $obs unless is_prefix($obs);
	$states{$n} = 1;
	last if $n >= $TRANSACTIONS;

	if (!$interrupted && $n >= $TRANSACTIONS / 4)
	{
		$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
		$rb->poll_query_until('postgres',
			"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
		  or die 'b did not stop streaming from a';
		$interrupted = 1;
	}
	elsif ($interrupted == 1 && $reads % 20 == 0)
	{
		$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
		$interrupted = 2;
	}
}
$reader->quit;
$writer->quit;
my ($c_reads, $c_states, $c_bad, $c_first_bad) =
  split / /, $watcher->query_safe("SELECT 'watch done'");
$watcher->quit;

note sprintf('b: %d reads, %d states; c: %d reads, %d states',
	$reads, scalar keys %states, $c_reads, $c_states);
is(scalar @bad, 0,
	"every read in b saw a's transactions as a prefix: all of 1..n and none after"
	  . (@bad ? " (first bad read: counter,count,max,open = $bad[0])" : ''));
cmp_ok($reads, '>=', 100, 'b read hundreds of times while the transactions arrived');
cmp_ok(scalar keys %states, '>', 10, 'b saw many intermediate states, not only the start and the end');
is($interrupted, 2, "b's stream from a was interrupted and resumed midway");
is($c_bad, 0, "every read in c saw a's transactions as a prefix"
	  . ($c_bad ? " (first bad read: counter,count,max,open = $c_first_bad)" : ''));
cmp_ok($c_states, '>', 10, 'c saw many intermediate states');

##########
# In the end everything arrived
##########

for my $node ($rb, $rc)
{
	is($node->safe_psql('postgres', $observe), "$TRANSACTIONS,$TRANSACTIONS,$TRANSACTIONS,1",
		'all ' . $TRANSACTIONS . ' transactions of a arrived in ' . $node->name);
}
wait_for_same_table([$ra, $rb, $rc], 'events');
wait_for_same_table([$ra, $rb, $rc], 'counter');
for my $node ($rb, $rc)
{
	ok(wait_for_value($node, q{
			SELECT state FROM cosmosrep.replication_status WHERE source_region = 'a'}, 'streaming'),
		$node->name . ' streams from a at the end');
}

$_->stop for ($ra, $rb, $rc);
done_testing();
