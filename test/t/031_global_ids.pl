# cosmosrep.global_id() as a key's default: concurrent inserts in three
# regions never collide, ids rise in each region, and they stay above
# everything issued before a kill -9 even while the wall clock is behind
# the last id issued (as after a step back of the clock).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

use CosmosRep::Test;

my @nodes = make_group('a', 'b', 'c');
my ($ra, $rb, $rc) = @nodes;
my $rows = 3000;

for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE ids (id bigint PRIMARY KEY DEFAULT cosmosrep.global_id(),
		                  region text NOT NULL, n int NOT NULL);
	});
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('ids')");
ok(wait_for_policies($rc, 'ids|last_writer_wins||'), 'the table is multi-region everywhere');

# every region inserts at the same time, in a few statements each
my @runs;
for my $node (@nodes)
{
	my $name = $node->name;
	my $sql = join('',
		map {
			my $from = ($_ - 1) * ($rows / 3) + 1;
			my $to = $_ * ($rows / 3);
			"INSERT INTO ids (region, n) SELECT '$name', g FROM generate_series($from, $to) g;\n"
		} 1 .. 3);
	push @runs, IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \my $out, '2>', \my $err);
}
ok($_->finish, 'concurrent inserts into one table in three regions succeed') for @runs;

ok(wait_for_value($ra, 'SELECT count(*) FROM ids', 3 * $rows),
	'every row reached the first region');
wait_for_same_table(\@nodes, 'ids');
is($ra->safe_psql('postgres', 'SELECT count(DISTINCT id) FROM ids'), 3 * $rows,
	'no two rows of any region got the same id');
is($ra->safe_psql('postgres', q{
		SELECT count(*) FROM ids i JOIN cosmosrep.regions r ON r.region_name = i.region
		 WHERE cosmosrep.version_region(i.id) <> r.region_id}),
	'0', 'every id carries the id of the region that issued it');
is($ra->safe_psql('postgres', q{
		SELECT count(*) FROM (
			SELECT id <= lag(id) OVER (PARTITION BY region ORDER BY n) AS back
			  FROM ids) x WHERE back}),
	'0', 'ids rise in the order each region issued them');

# the wall clock 50 s behind the last id, then a crash: ids go on above
my $before = $rb->safe_psql('postgres', "SELECT max(id) FROM ids WHERE region = 'b'");
$rb->safe_psql('postgres',
	'SELECT cosmosrep.observe_version(cosmosrep.current_version() + (50000::bigint << 21))');
my $ahead = $rb->safe_psql('postgres', 'SELECT cosmosrep.global_id()');
crash_region($rb);
$rb->safe_psql('postgres',
	"INSERT INTO ids (region, n) SELECT 'b', g FROM generate_series($rows + 1, $rows + 100) g");
is($rb->safe_psql('postgres',
		"SELECT min(id) > $ahead AND min(id) > $before FROM ids WHERE region = 'b' AND n > $rows"),
	't', 'after a kill -9, with the wall clock behind, ids stay above every id issued before');
wait_for_same_table(\@nodes, 'ids');
is($ra->safe_psql('postgres', 'SELECT count(DISTINCT id) = count(*) FROM ids'), 't',
	'and every id is still unique');
ok_all_streaming(\@nodes, 'streams after the crash');

$_->stop for @nodes;
done_testing();
