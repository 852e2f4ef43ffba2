# R8: join_region copies tombstones.  A region that joins after a delete
# must know of it: an update older than the delete that reaches the new
# region only after the join must not recreate the row there.
#
# Group a, b with row k.  b stops applying a's changes.  a pushes its
# clock about 20 s ahead and deletes row k, so the delete's version is
# above anything b issues meanwhile.  c joins through a: it copies a's
# tables, which no longer hold k.  b then updates k (b has not seen the
# delete; its version is lower than the delete's): the update reaches a,
# where the delete is newer, and c, through c's new stream from b.  Once b
# applies a's changes again, k must be absent in a, b and c.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $K = 3;

my ($ra, $rb) = make_group(qw(a b));

my $TABLES = q{
	CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
	CREATE TABLE marks (src text PRIMARY KEY);
};
$_->safe_psql('postgres', $TABLES) for ($ra, $rb);
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('items');
	SELECT cosmosrep.enable_table('marks');
});
$rb->poll_query_until('postgres', 'SELECT count(*) = 2 FROM cosmosrep.tables')
  or die 'enabling the tables did not reach b';
$ra->safe_psql('postgres',
	"INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 5) g");
wait_for_same_table([ $ra, $rb ], 'items');

# b stops applying a's changes
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
$rb->poll_query_until('postgres',
	"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
  or die 'b did not pause a';

# a's clock about 20 s ahead (versions are ms << 21 | counter << 8 |
# region), then the delete of k, between two versions of a's clock
$ra->safe_psql('postgres',
	'SELECT cosmosrep.observe_version((cosmosrep.current_version() + (20000::bigint << 21)))');
my ($before_delete, $deleted, $after_delete) = split /\n/, $ra->safe_psql('postgres',
	"SELECT cosmosrep.next_version(); DELETE FROM items WHERE id = $K RETURNING id; SELECT cosmosrep.next_version()");
is($deleted, $K, "a deletes row $K");

# c joins through a, like make_group
my $rc = new_region('c');
$rc->safe_psql('postgres', $TABLES);
$rc->safe_psql('postgres', sprintf(
		"SELECT cosmosrep.join_region('c', '%s', via => '%s')",
		region_dsn($rc), region_dsn($ra)));
my @all = ($ra, $rb, $rc);
is($rc->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM items'),
	join(',', grep { $_ != $K } 1 .. 5), "c joined with a's rows, without row $K");
is($rb->safe_psql('postgres', "SELECT count(*) FROM items WHERE id = $K"), '1',
	"b still holds row $K: it has not applied a's delete");

# b updates k: an older write than a's delete
my $update = $rb->safe_psql('postgres',
	"UPDATE items SET v = 'b older update' WHERE id = $K RETURNING _cr_version");
cmp_ok($update, '<', $before_delete,
	"b's update of row $K has a lower version than a's delete");

# fences: once a region holds another's mark, it has applied everything
# that region wrote before
$_->safe_psql('postgres', "INSERT INTO marks VALUES ('" . $_->name . "')") for @all;
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
for my $node (@all)
{
	ok($node->poll_query_until('postgres', 'SELECT count(*) = 3 FROM marks'),
		$node->name . ' applies the writes of the two other regions');
}

for my $node (@all)
{
	is($node->safe_psql('postgres', "SELECT count(*) FROM items WHERE id = $K"), '0',
		$node->name . ": row $K stays deleted: b's update, older than a's delete, does not recreate it"
		  . ($node == $rc ? ' in c, which joined after the delete' : ''));
}
{
	# everything is applied: the tables are final
	local $PostgreSQL::Test::Utils::timeout_default = 5;
	wait_for_same_table(\@all, 'items');
}

ok_all_streaming(\@all, 'replication keeps streaming');

$_->stop for @all;
done_testing();
