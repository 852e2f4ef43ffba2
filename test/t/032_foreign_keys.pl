# Foreign keys between multi-region tables, in three regions: a parent
# deleted in one region while children referencing it are inserted in
# the others.  Apply checks no foreign key and fires no cascade (as core's
# apply): every region ends with the same rows, the new children without
# their parent, and cosmosrep.dangling_references names them alike
# everywhere.  Local writes keep their checks and cascades.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CosmosRep::Test;

my @nodes = make_group('a', 'b', 'c');
my ($ra, $rb, $rc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE parents (id int PRIMARY KEY, name text);
		CREATE TABLE children (id int PRIMARY KEY,
		                       parent_id int REFERENCES parents ON DELETE CASCADE,
		                       note text);
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('parents');
	SELECT cosmosrep.enable_table('children');
	INSERT INTO parents VALUES (1, 'one'), (2, 'two');
	INSERT INTO children VALUES (100, 1, 'old child of 1'), (101, 2, 'child of 2'),
	                            (102, NULL, 'no parent at all');
});
wait_for_same_table(\@nodes, 'children');

# local writes keep their checks
my ($ret, $out, $err) = $ra->psql('postgres', 'INSERT INTO children VALUES (103, 9)');
like($err, qr/violates foreign key constraint "children_parent_id_fkey"/,
	'a local insert of a child without its parent is refused as ever');

# the race: a deletes parent 1 (cascading to child 100 there), b and c
# insert children of parent 1 meanwhile
partition_regions(\@nodes);
$ra->safe_psql('postgres', 'DELETE FROM parents WHERE id = 1');
is($ra->safe_psql('postgres', 'SELECT count(*) FROM children WHERE parent_id = 1'), '0',
	'the local delete cascades to the children the region has');
$rb->safe_psql('postgres', "INSERT INTO children VALUES (200, 1, 'new child in b')");
$rc->safe_psql('postgres', "INSERT INTO children VALUES (300, 1, 'new child in c')");
heal_regions(\@nodes);

wait_for_same_table(\@nodes, 'parents');
wait_for_same_table(\@nodes, 'children');
ok_all_streaming(\@nodes, 'the crossing delete and inserts stop no link');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM parents'),
		'2', $node->name . ': the parent is gone');
	is($node->safe_psql('postgres', q{
			SELECT string_agg(constraint_name || ' ' || parent || ' ' || (child_row->>'id'), ','
			                  ORDER BY (child_row->>'id')::int)
			  FROM cosmosrep.dangling_references('children')}),
		'children_parent_id_fkey parents 200,children_parent_id_fkey parents 300',
		$node->name . ': dangling_references names the two children inserted while their parent went');
}

# the application decides; its fix replicates like any write
$rb->safe_psql('postgres', "INSERT INTO parents VALUES (1, 'one, again')");
wait_for_same_table(\@nodes, 'parents');
for my $node (@nodes)
{
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM cosmosrep.dangling_references('children')"),
		'0', $node->name . ': no dangling reference once the parent is back');
}
wait_for_same_table(\@nodes, 'children');

$_->stop for @nodes;
done_testing();
