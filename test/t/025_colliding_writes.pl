# Writes that collide while two regions are partitioned: after the
# partition heals, both regions hold the write with the higher version,
# whatever the order of arrival, and nothing stops replication.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my ($ra, $rb) = make_group(qw(a b));

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', 'CREATE TABLE docs (id int PRIMARY KEY, body text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('docs')");
$rb->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM cosmosrep.tables") or die 'enable did not arrive';
$ra->safe_psql('postgres',
	"INSERT INTO docs SELECT g, 'original ' || g FROM generate_series(1, 10) g");
wait_for_same_table([$ra, $rb], 'docs');

# partition: neither region applies the other's changes
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
for my $node ($ra, $rb)
{
	$node->poll_query_until('postgres',
		"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status")
	  or die $node->name . ' did not pause';
}

# each statement runs after the previous one has committed, so the later
# one carries the higher version
$rb->safe_psql('postgres', "UPDATE docs SET body = 'b updated' WHERE id = 1");
$ra->safe_psql('postgres', 'DELETE FROM docs WHERE id = 1');                  # delete is newer

$ra->safe_psql('postgres', 'DELETE FROM docs WHERE id = 2');
$rb->safe_psql('postgres', "UPDATE docs SET body = 'b updated' WHERE id = 2"); # update is newer

$ra->safe_psql('postgres', "UPDATE docs SET body = 'a first' WHERE id = 3");
$rb->safe_psql('postgres', "UPDATE docs SET body = 'b second' WHERE id = 3");  # b wins

$rb->safe_psql('postgres', "UPDATE docs SET body = 'b first' WHERE id = 4");
$ra->safe_psql('postgres', "UPDATE docs SET body = 'a second' WHERE id = 4");  # a wins

$ra->safe_psql('postgres', "INSERT INTO docs VALUES (11, 'a insert')");
$rb->safe_psql('postgres', "INSERT INTO docs VALUES (11, 'b insert')");       # b wins

$ra->safe_psql('postgres', 'DELETE FROM docs WHERE id = 5');
$rb->safe_psql('postgres', 'DELETE FROM docs WHERE id = 5');                   # both delete

$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
wait_for_same_table([$ra, $rb], 'docs');

my %expect = (
	1 => undef,
	2 => 'b updated',
	3 => 'b second',
	4 => 'a second',
	5 => undef,
	11 => 'b insert',
);
for my $node ($ra, $rb)
{
	for my $id (sort { $a <=> $b } keys %expect)
	{
		my $got = $node->safe_psql('postgres', "SELECT body FROM docs WHERE id = $id");
		my $want = $expect{$id} // '';
		is($got, $want, $node->name . ": row $id holds the write with the higher version"
			  . (defined $expect{$id} ? '' : ' (deleted)'));
	}
}
is($ra->safe_psql('postgres', 'SELECT count(*) FROM docs'), '9',
	'untouched rows are still there');
ok($ra->poll_query_until('postgres',
		"SELECT state = 'streaming' AND last_error IS NULL FROM cosmosrep.replication_status"),
	'colliding writes do not stop replication');

$_->stop for ($ra, $rb);
done_testing();
