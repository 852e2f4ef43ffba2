# A join whose via region has not caught up with another member fails
# after cosmosrep.join_catchup_timeout, leaves no slot behind in any
# region, and can be run again once the via region has caught up.
#
# Group a, b.  a stops applying b's changes, and b writes a row: a's copy
# would miss it.  c joins through a with a one-second catch-up timeout:
# the join creates c's slots and b's slot for c, then waits for a to
# confirm b's stream up to that slot's start, which cannot happen while a
# is paused.  The join's one teardown must drop the three slots it
# created.  Once a applies b's changes again, the same join succeeds.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my ($ra, $rb) = make_group(qw(a b));

my $TABLE = 'CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)';
$_->safe_psql('postgres', $TABLE) for ($ra, $rb);
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('items')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die 'enabling the table did not reach b';

# a stops applying b's changes; b writes meanwhile
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
$ra->poll_query_until('postgres',
	"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'b'")
  or die 'a did not pause b';
$rb->safe_psql('postgres', "INSERT INTO items VALUES (1, 'written in b')");

my $rc = new_region('c');
$rc->safe_psql('postgres', $TABLE);
my $join = sprintf("SELECT cosmosrep.join_region('c', '%s', via => '%s')",
	region_dsn($rc), region_dsn($ra));

my $start = time;
my ($ret, $out, $err) = $rc->psql('postgres',
	"SET cosmosrep.join_catchup_timeout = '1s'; $join");
my $elapsed = time - $start;
like($err,
	qr/ERROR:  region "a" has not caught up with region "b"\nDETAIL:  Region "a" must have applied the writes of region "b" up to [0-9A-F]+\/[0-9A-F]+ before it can be copied\.\nHINT:  Check cosmosrep\.replication_status in region "a", then call cosmosrep\.join_region again\./,
	'a join through a region that has not caught up fails and says with which region');
cmp_ok($elapsed, '<', 60,
	'the join gave up after cosmosrep.join_catchup_timeout, not the default two minutes');

is($rc->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '0',
	'the failed join dropped the slots it had created in the joining region');
is($rb->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cr_b_c'}), '0',
	'the failed join dropped the slot it had created in the other member');
is($ra->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cr_a_c'}), '0',
	'the failed join created no slot in the via region');
is($rc->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.regions'), '0',
	'the joining database did not become a region');
for my $node ($ra, $rb)
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.regions'), '2',
		$node->name . ': the failed join left the group unchanged');
}

# once a has caught up, the same join succeeds
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
ok(wait_for_value($ra, 'SELECT count(*) FROM items', '1'),
	'a applies the row b wrote while it was paused');
$rc->safe_psql('postgres', $join);
is($rc->safe_psql('postgres', 'SELECT v FROM items WHERE id = 1'), 'written in b',
	'the join run again copies the row b wrote');
ok_all_streaming([ $ra, $rb, $rc ], 'the three regions stream after the second join');

$_->stop for ($ra, $rb, $rc);
done_testing();
