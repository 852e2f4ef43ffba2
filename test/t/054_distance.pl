# Regions at a distance: every link goes through the harness's relay
# (CosmosRep::Relay), which holds each direction's bytes for a one-way
# delay.  A change takes at least that long to arrive, a read in the
# other region that presents the writer's fresh session token waits for
# it, not more than it must and never past the timeout, and a strong
# commit waits one round trip.
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
