# The hybrid logical clock: unique, strictly increasing versions across
# concurrent sessions, and larger after a restart, a backend crash and a
# postmaster crash than every version issued before.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_region('hlc', create => 1, extra_conf => 'restart_after_crash = on');

##########
# Concurrent sessions
##########

$node->safe_psql('postgres', q{
	CREATE TABLE issued (client int, seq bigint, version bigint);
	CREATE SEQUENCE issue_seq;
});
$node->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=2000',
	0,
	[qr{processed: 8000/8000}],
	[qr{^$}],
	'four sessions issue 8000 versions',
	{
		'001_issue' => q{
			INSERT INTO issued VALUES (:client_id, nextval('issue_seq'), cosmosrep.next_version());
		}
	});

is($node->safe_psql('postgres',
		'SELECT count(DISTINCT version) = count(*) AND count(*) = 8000 FROM issued'),
	't', 'concurrent sessions never get the same version');
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (
			SELECT version, lag(version) OVER (PARTITION BY client ORDER BY seq) AS prev
			  FROM issued) s
		 WHERE version <= prev}),
	'0', 'each session sees strictly increasing versions');
is($node->safe_psql('postgres',
		'SELECT bool_and(cosmosrep.version_region(version) = 1) FROM issued'),
	't', 'every version carries the local region id');

##########
# Early renewal of the reservation
##########

# The clock writes its reservation (the millisecond no tick may reach
# without a new one on disk, little-endian int64 in $PGDATA/cosmosrep.hlc)
# 10 s ahead, and renews it while 2.5 s are still left, so that writers
# never wait for its fsyncs.  Over 13 s of versions taken every 0.5 s
# (more than one whole reservation), the reservation must stay well ahead
# of the clock after every one of them; renewing only once it runs out
# leaves it less than a second ahead for a while in every 10 s.
my $min_lead_ms = $node->safe_psql('postgres', q{
	CREATE FUNCTION pg_temp.least_reservation_lead_ms() RETURNS bigint LANGUAGE plpgsql AS $$
	DECLARE least_lead bigint;
	BEGIN
		FOR i IN 1..26 LOOP
			PERFORM cosmosrep.next_version();
			SELECT least(least_lead,
						 sum(get_byte(f, b)::bigint << (8 * b))
						 - (extract(epoch FROM clock_timestamp() - '2020-01-01+00'::timestamptz) * 1000)::bigint)
			  INTO least_lead
			  FROM pg_read_binary_file('cosmosrep.hlc') f, generate_series(0, 7) b;
			PERFORM pg_sleep(0.5);
		END LOOP;
		RETURN least_lead;
	END $$;
	SELECT pg_temp.least_reservation_lead_ms();
});
cmp_ok($min_lead_ms, '>', 2000,
	'the reservation is renewed before it runs out (least lead after a write, in ms)');

##########
# Restart and crashes
##########

# A version observed from a region whose clock runs a minute ahead pushes
# this clock ahead too; after a restart the wall clock alone would be
# behind it, so only the persisted reservation keeps versions increasing.
$node->safe_psql('postgres',
	'SELECT cosmosrep.observe_version(cosmosrep.current_version() + (60000::bigint << 21))');
my $before = $node->safe_psql('postgres', 'SELECT cosmosrep.next_version()');
cmp_ok($before, '>', $node->safe_psql('postgres',
		"SELECT (extract(epoch FROM now() - '2020-01-01'::timestamptz) * 1000 + 30000)::bigint << 21"),
	'an observed future version moves the clock ahead of the wall clock');

$node->restart;
my $after = $node->safe_psql('postgres', 'SELECT cosmosrep.next_version()');
cmp_ok($after, '>', $before, 'versions after pg_ctl restart are larger');

# a backend killed with SIGKILL makes the postmaster re-initialise shared memory
my $session = $node->background_psql('postgres');
my $victim = $session->query_safe('SELECT pg_backend_pid()');
$before = $node->safe_psql('postgres', 'SELECT cosmosrep.next_version()');
kill 'KILL', $victim;
$node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
eval { $session->quit };
$after = $node->safe_psql('postgres', 'SELECT cosmosrep.next_version()');
cmp_ok($after, '>', $before, 'versions after a backend crash and reinitialisation are larger');

$before = $node->safe_psql('postgres', 'SELECT cosmosrep.next_version()');
crash_region($node);
$after = $node->safe_psql('postgres', 'SELECT cosmosrep.next_version()');
cmp_ok($after, '>', $before, 'versions after kill -9 of the postmaster and recovery are larger');

$node->stop;
done_testing();
