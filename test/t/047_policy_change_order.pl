# alter_table_policy takes effect at its position in the change stream,
# in every region alike.
#
# A policy change reaches the regions at different times, so the two
# writes of a conflict may have been made under different configurations
# of the table.  Every write carries the configuration its writer had
# (_cr_config), and every region decides a conflict the same way: two
# writes of one configuration by that configuration's policy, two writes
# of different configurations for the write of the newer configuration.
# A region that ships a row written under a configuration it received
# from another region sends that configuration first.
#
# Three regions a, b, c; all links are paused, a changes the policy of
# items and writes, b (which has not seen the change) writes the same
# keys, and the links heal in orders that give each region the policy
# change at a different point among the rows.  The expected rows are
# stated literally.  Before this was built, the regions decided with
# whatever policy they held when a row arrived: scenario 1 ended with b
# holding its own row and the others c's, and scenario 2 with a's writes
# lost in c.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @all = make_group(qw(a b c));
my %node = map { ($_->name => $_) } @all;
my @NAMES = qw(a b c);

sub sql
{
	my ($r, $query) = @_;
	return $node{$r}->safe_psql('postgres', $query);
}

# Run a write of one row in region $r; its version.
sub put
{
	my ($r, $query) = @_;
	my $v = sql($r, "$query RETURNING _cr_version");
	die "\"$query\" in $r wrote no single row: $v" unless $v =~ /^\d+$/;
	return $v;
}

# Resume the links "dst<src" and wait until each dst holds src's mark of
# $round (a stream is applied in commit order, so the mark comes last).
sub heal
{
	my ($round, @links) = @_;
	for my $link (@links)
	{
		my ($dst, $src) = split /</, $link;
		sql($dst, "SELECT cosmosrep.resume_region('$src')");
		$node{$dst}->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM marks WHERE src = '$src' AND round = $round")
		  or die "$dst did not apply the writes of $src in round $round";
	}
	return;
}

sub mark
{
	my ($round) = @_;
	sql($_, "INSERT INTO marks VALUES ('$_', $round)") for @NAMES;
	return;
}

sub items
{
	my ($r) = @_;
	return sql($r, q{SELECT string_agg(format('%s:%s:%s', id, v, seq), ' ' ORDER BY id)
	                   FROM items});
}

# the conflicts of items that region $r recorded since conflict $after:
# "key kind resolution policy" lines
sub conflicts
{
	my ($r, $after) = @_;
	return sql($r, qq{
		SELECT string_agg(format('%s %s %s %s', key->>'id', kind, resolution, policy),
		                  E'\\n' ORDER BY (key->>'id')::int, conflict_id)
		  FROM cosmosrep.conflicts
		 WHERE table_name = 'items'::regclass AND conflict_id > $after});
}

sub last_conflict
{
	my ($r) = @_;
	return sql($r, 'SELECT coalesce(max(conflict_id), 0) FROM cosmosrep.conflicts');
}

for my $r (@NAMES)
{
	sql($r, q{
		CREATE TABLE marks (src text, round int, PRIMARY KEY (src, round));
		CREATE TABLE items (id int PRIMARY KEY, v text, seq int);
	});
}
sql('a', q{
	SELECT cosmosrep.enable_table('marks');
	SELECT cosmosrep.enable_table('items');
	INSERT INTO items VALUES (1, 'pre', 0), (2, 'pre', 0), (4, 'pre', 10);
});
wait_for_same_table(\@all, 'items');

my $LWW = 'items|last_writer_wins||';
my $PATH = 'items|last_writer_wins|seq|';
sub policies_of
{
	my ($r, $expected) = @_;
	return wait_for_policies($node{$r},
		join("\n", sort("marks|last_writer_wins||", $expected)));
}

##########
# 1. Two writes made under the old policy are decided by it everywhere,
#    even where the new policy arrived first.
##########

partition_regions(\@all);
my %v;
$v{b1} = put('b', "UPDATE items SET v = 'b', seq = 100 WHERE id = 1");
$v{c1} = put('c', "UPDATE items SET v = 'c', seq = 1 WHERE id = 1");
ok($v{b1} < $v{c1}, "1: c's write is the newer one");
sql('a', q{SELECT cosmosrep.alter_table_policy('items', 'last_writer_wins', path => 'seq')});
mark(1);

# b learns the path policy before c's row arrives; c receives b's row
# before the policy change
heal(1, 'b<a', 'b<c', 'c<b', 'c<a', 'a<b', 'a<c');
for my $r (@NAMES)
{
	is(policies_of($r, $PATH), join("\n", sort('marks|last_writer_wins||', $PATH)),
		"1: $r has the path policy");
	is(items($r), '1:c:1 2:pre:0 4:pre:10',
		"1: $r keeps c's newer write, as last_writer_wins on the version under which both were made decides");
}
for my $r (qw(b c))
{
	is(conflicts($r, 0), '1 update_update ' . ($r eq 'b' ? 'remote_applied' : 'local_kept')
		  . ' last_writer_wins',
		"1: $r recorded the conflict under the policy of both writes");
}
my %seen = map { ($_ => last_conflict($_)) } @NAMES;

##########
# 2. A write made under the newer configuration wins against one made
#    under the older, whatever their versions and either policy; a
#    region ships the configuration before the rows written under it.
##########

partition_regions(\@all);
sql('a', q{SELECT cosmosrep.alter_table_policy('items', 'last_writer_wins')});
# a writes first, so b's writes are newer and b's path value higher: the
# older policy (path) and the newer one (version) would both keep b's
$v{a2} = put('a', "UPDATE items SET v = 'a', seq = 1 WHERE id = 2");
$v{a4} = put('a', "UPDATE items SET v = 'a', seq = 11 WHERE id = 4");
$v{b2} = put('b', "UPDATE items SET v = 'b', seq = 50 WHERE id = 2");
my @d = split /\n/, sql('b',
	'SELECT cosmosrep.next_version(); DELETE FROM items WHERE id = 4 RETURNING id');
ok($v{a2} < $v{b2} && $v{a4} < $d[0], "2: b's update and delete are newer than a's writes");
mark(2);

# b receives a's policy change and writes under it, then c hears from b
# only: b's row written under the new configuration arrives with it
heal(2, 'b<a');
is(policies_of('b', $LWW), join("\n", sort('marks|last_writer_wins||', $LWW)),
	'2: b has the new policy');
is(items('b'), '1:c:1 2:a:1 4:a:11',
	"2: in b, a's writes of the newer configuration beat b's newer update and delete");
$v{b3} = put('b', "INSERT INTO items VALUES (3, 'b', 7)");
sql('b', "INSERT INTO marks VALUES ('b', 3)");
heal(3, 'c<b');
is(policies_of('c', $LWW), join("\n", sort('marks|last_writer_wins||', $LWW)),
	"2: c has the new policy, from b, while it hears nothing from a");
is(items('c'), '1:c:1 2:b:50 3:b:7',
	"2: c applied b's writes, including the row b wrote under the configuration it sent");
is(sql('c', q{SELECT string_agg(state || coalesce(' ' || last_error, ''), ',')
                FROM cosmosrep.replication_status WHERE source_region = 'b'}),
	'streaming', '2: the link from b streams with no error');

heal(2, 'c<a', 'a<b', 'a<c', 'b<c');
for my $r (@NAMES)
{
	is(items($r), '1:c:1 2:a:1 3:b:7 4:a:11',
		"2: $r ends with a's writes of the newer configuration");
}
is(conflicts('a', $seen{a}),
	"2 update_update local_kept newer_configuration\n4 delete_updated local_kept newer_configuration",
	"2: a kept its writes against b's older configuration");
is(conflicts('b', $seen{b}),
	"2 update_update remote_applied newer_configuration\n4 update_deleted remote_applied newer_configuration",
	"2: b applied a's writes over its own");
is(conflicts('c', $seen{c}),
	"2 update_update remote_applied newer_configuration\n4 update_deleted remote_applied newer_configuration",
	"2: c applied a's writes over b's");

my @sums = map { table_checksum($_, 'items') } @all;
is(scalar(grep { $_ eq $sums[0] } @sums), 3, 'every region holds the same rows');
ok_all_streaming(\@all, 'every link streams with no error');

done_testing();
