# Regions at a distance: every link goes through the harness's relay
# (CosmosRep::Relay), which holds each direction's bytes for a one-way
# delay.  A change takes at least that long to arrive, a read in the
# other region that presents the writer's fresh session token waits for
# it, not more than it must and never past the timeout, bounded staleness
# holds its bound while the link slows down (writes wait) and lets writes
# run at full speed again once it recovers, and a strong commit waits one
# round trip.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use CosmosRep::Test;

my $delay_ms = 150;
$CosmosRep::Test::LINK_DELAY_MS = $delay_ms;
my ($ra, $rb) = make_group('a', 'b');
like($rb->safe_psql('postgres',
		"SELECT dsn FROM cosmosrep.regions WHERE region_name = 'a'"),
	qr/^host=127\.0\.0\.1 port=\d+ /, 'the regions reach each other through the relay');

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', 'CREATE TABLE notes (id int PRIMARY KEY, note text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('notes')");
ok(wait_for_policies($rb, 'notes|last_writer_wins||'), 'the enable crossed the distance');

# a write takes at least the one-way delay to arrive
my $t0 = time;
$ra->safe_psql('postgres', "INSERT INTO notes VALUES (1, 'far')");
ok(wait_for_value($rb, 'SELECT count(*) FROM notes WHERE id = 1', '1'), 'the write arrives');
my $took_ms = sprintf("%.0f", (time - $t0) * 1000);
cmp_ok($took_ms, '>=', $delay_ms, "it took at least the one-way delay ($took_ms ms)");

# a read with the writer's fresh token waits for the write, about one
# delay, well within cosmosrep.session_wait_timeout
my $token = $ra->safe_psql('postgres',
	"INSERT INTO notes VALUES (2, 'fresh'); SELECT cosmosrep.session_token()");
my $out = $rb->safe_psql('postgres', qq{
	SELECT extract(epoch FROM clock_timestamp());
	SET cosmosrep.session_token = '$token';
	SELECT count(*), extract(epoch FROM clock_timestamp()) FROM notes WHERE id = 2;
});
my ($before, $row) = split /\n/, $out;
my ($seen, $after) = split /\|/, $row;
is($seen, '1', 'the read presenting the token sees the write');
my $waited_ms = sprintf("%.0f", ($after - $before) * 1000);
cmp_ok($waited_ms, '>', 10, "it waited for the write to arrive ($waited_ms ms)");
cmp_ok($waited_ms, '<', 5000, 'and not up to the session wait timeout');

# bounded staleness: a writes single-row transactions in a loop while b
# must stay within max_staleness_prefix versions of them.  What counts is
# b's confirmed position in a's slot (cr_a_b), as staleness.c reads it:
# after each write the loop counts its own writes whose commit end (the
# ring's, cosmosrep.last_write_position()) is past that position, itself
# included.  With one writer the bound is exact: no margin.  Before each
# write it counts them too: a write that finds the bound reached waits
# for b, and the time such writes take is what the bound costs, however
# fast the machine runs the loop otherwise.
#
# At 40 ms (the distance of issue 25) b confirms a write about 120 ms
# after it (a round trip, and b's WAL writer, set to 10 ms so that the
# link and not its sleep dominates): a writer at full speed, some 10,000
# to 20,000 writes a second here, seldom reaches a bound of 3,000
# versions.  The link then slows to a second each way (a congested link):
# a write can be confirmed no sooner than two seconds after it, and
# unthrottled the loop would be its whole length, 9,000, ahead of b.
my $bound = 3000;
my $n = 9000;
my ($fast_ms, $slow_ms) = (40, 1000);
$rb->append_conf('postgresql.conf', 'wal_writer_delay = 10ms');
$rb->reload;
$rb->poll_query_until('postgres', 'SHOW wal_writer_delay', '10ms') or die;
$ra->append_conf('postgresql.conf',
	"cosmosrep.default_consistency = 'bounded_staleness'\ncosmosrep.max_staleness_prefix = $bound");
$ra->reload;
$ra->poll_query_until('postgres', 'SHOW cosmosrep.max_staleness_prefix', $bound) or die;
$ra->safe_psql('postgres',
	'CREATE TABLE bounded_writes (phase text, i int, t0 float8, t1 float8, behind int, at_bound boolean)');

# write $n rows from id $first on, one transaction each, recorded under
# $phase once b has confirmed everything a wrote before; returns the
# phase's figures: writes, most versions behind, elapsed s, writes per s,
# the longest time a write took (ms), and the time taken by the writes
# that found the bound reached before they started (ms: what the bound
# cost, whatever else slows the machine)
sub bounded_writes
{
	my ($phase, $first) = @_;
	ok($ra->poll_query_until('postgres', q{
		SELECT confirmed_flush_lsn >= cosmosrep.last_write_position()
		  FROM pg_replication_slots WHERE slot_name = 'cr_a_b'}),
		"$phase: b has confirmed a's earlier writes");
	$ra->safe_psql('postgres', qq{
		DO \$\$
		DECLARE
			ends pg_lsn[] := '{}';    -- the commit end of each write
			lo int := 1;              -- the first write b may not have confirmed
			confirmed pg_lsn;
			t0 float8[] := '{}';
			t1 float8[] := '{}';
			behind int[] := '{}';
			at_bound boolean[] := '{}';
		BEGIN
			FOR k IN 1 .. $n LOOP
				SELECT confirmed_flush_lsn INTO confirmed
				  FROM pg_replication_slots WHERE slot_name = 'cr_a_b';
				WHILE lo < k AND ends[lo] <= confirmed LOOP
					lo := lo + 1;
				END LOOP;
				at_bound := array_append(at_bound, k - lo >= $bound);
				t0 := array_append(t0, extract(epoch FROM clock_timestamp())::float8);
				INSERT INTO notes VALUES ($first + k, 'bounded');
				t1 := array_append(t1, extract(epoch FROM clock_timestamp())::float8);
				SELECT confirmed_flush_lsn INTO confirmed
				  FROM pg_replication_slots WHERE slot_name = 'cr_a_b';
				WHILE lo < k AND ends[lo] <= confirmed LOOP
					lo := lo + 1;
				END LOOP;
				behind := array_append(behind, k - lo + 1);
				COMMIT;
				ends := array_append(ends, cosmosrep.last_write_position());
			END LOOP;
			INSERT INTO bounded_writes
			SELECT '$phase', k, a, b, c, d FROM unnest(t0, t1, behind, at_bound) WITH ORDINALITY AS u(a, b, c, d, k);
		END
		\$\$;
	});
	my @fig = split /\|/, $ra->safe_psql('postgres', qq{
		SELECT count(*), max(behind), round((max(t1) - min(t0))::numeric, 3),
		       round((count(*) / (max(t1) - min(t0)))::numeric),
		       round((max(t1 - t0) * 1000)::numeric),
		       round((coalesce(sum(t1 - t0) FILTER (WHERE at_bound), 0) * 1000)::numeric)
		  FROM bounded_writes WHERE phase = '$phase'});
	note("$phase: $fig[0] writes, at most $fig[1] versions behind, $fig[2] s, $fig[3] writes/s,"
		  . " the longest write $fig[4] ms, $fig[5] ms in writes that found the bound reached");
	return @fig;
}

set_link_delay($ra, $fast_ms);
my @fast = bounded_writes("at $fast_ms ms", 100000);
cmp_ok($fast[1], '<=', $bound, "at $fast_ms ms b stays within the bound ($fast[1] versions behind)");
cmp_ok($fast[5], '<=', $fast[2] * 1000 / 4,
	"and the writes hardly wait for it ($fast[5] ms of $fast[2] s, $fast[3] writes/s)");

set_link_delay($ra, $slow_ms);
my @slow = bounded_writes("at $slow_ms ms", 200000);
cmp_ok($slow[1], '<=', $bound,
	"at $slow_ms ms b stays within the bound all the same ($slow[1] versions behind)");
# write k waits until b confirmed write k - bound, a round trip after it
my $floor = ($n / $bound - 1) * 2 * $slow_ms / 1000;
cmp_ok($slow[2], '>=', $floor,
	"the writes are throttled to the bound per round trip ($slow[2] s for $n writes, at least $floor s)");
cmp_ok($slow[4], '>=', $slow_ms, "a write waited at least one delay ($slow[4] ms)");
cmp_ok($slow[5], '>=', $slow[2] * 1000 / 2,
	"the writes spent most of the phase waiting for the bound ($slow[5] ms of $slow[2] s)");

set_link_delay($ra, $fast_ms);
my @again = bounded_writes("at $fast_ms ms again", 300000);
cmp_ok($again[1], '<=', $bound, "back at $fast_ms ms b stays within the bound ($again[1] versions behind)");
cmp_ok($again[2], '<', $floor, "and the writes are no longer throttled by the slow link ($again[2] s)");
# the writer's own pace depends on the machine's load, what the bound
# costs it does not
cmp_ok($again[5], '<=', $again[2] * 1000 / 4,
	"they hardly wait for the bound any more ($again[5] ms of $again[2] s; $fast[5] ms of $fast[2] s before the link slowed)");
cmp_ok($again[3], '>=', 2 * $slow[3],
	"they run at full speed again ($again[3] writes/s; $fast[3] before the link slowed, $slow[3] while slow)");
set_link_delay($ra, $delay_ms);

# strong with a as the write region: a commit waits for b to apply it and
# say so, one round trip (and at most a WAL writer delay at b), not more
$ra->safe_psql('postgres', "SELECT cosmosrep.set_multiple_write_regions(false, 'a')");
ok(wait_for_value($rb, q{SELECT string_agg(region_name, ',') FROM cosmosrep.regions WHERE accepts_writes}, 'a'),
	'a alone accepts writes');
$ra->append_conf('postgresql.conf',
	"cosmosrep.default_consistency = 'strong'\nsynchronous_standby_names = 'cosmosrep_b'");
$ra->reload;
$ra->poll_query_until('postgres', 'SHOW synchronous_standby_names', 'cosmosrep_b') or die;
$ra->safe_psql('postgres', 'UPDATE notes SET note = note');    # the first waits for the feedback loop
$out = $ra->safe_psql('postgres', q{
	SELECT extract(epoch FROM clock_timestamp());
	UPDATE notes SET note = 'strong' WHERE id = 1;
	SELECT extract(epoch FROM clock_timestamp());
});
($before, $after) = split /\n/, $out;
my $commit_ms = sprintf("%.0f", ($after - $before) * 1000);
cmp_ok($commit_ms, '>=', 2 * $delay_ms, "a strong commit waits a round trip ($commit_ms ms)");
cmp_ok($commit_ms, '<', 2 * $delay_ms + 1000, 'and not much more');
is($rb->safe_psql('postgres', "SET cosmosrep.consistency = 'eventual'; SELECT note FROM notes WHERE id = 1"),
	'strong', 'once it returned, the other region holds the write');

ok_all_streaming([ $ra, $rb ], 'streams at a distance');
$_->stop for ($ra, $rb);
done_testing();
