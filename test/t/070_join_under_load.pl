# A region joins a group while both members keep writing: the copy of the
# existing rows and the streams that follow line up, so the new region ends
# identical to the others, with no row lost and none applied twice.  A join
# that fails leaves the joining database as it was, and no slot behind.
use strict;
use warnings;

use CosmosRep::Test;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $ROWS = 100_000;
my $ITEMS = 'CREATE TABLE items (id bigint PRIMARY KEY, val int NOT NULL, note text)';

my ($ra, $rb) = make_group(qw(a b));

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', $ITEMS);
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('items')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die 'enable_table did not reach b';
$ra->safe_psql('postgres',
	"INSERT INTO items SELECT g, g % 1000, 'row ' || g FROM generate_series(1, $ROWS) g");
$rb->poll_query_until('postgres', "SELECT count(*) = $ROWS FROM items")
  or die 'the rows did not reach b';

##########
# A failed join leaves nothing behind
##########

my $rc = new_region('c');

sub join_c
{
	my ($name) = @_;
	return $rc->psql('postgres', sprintf(
			"SELECT cosmosrep.join_region('%s', '%s', via => '%s')",
			$name, region_dsn($rc), region_dsn($ra)));
}

sub slots_of
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		'SELECT coalesce(string_agg(slot_name, \',\' ORDER BY slot_name), \'\') FROM pg_replication_slots');
}

my %slots_before = (a => slots_of($ra), b => slots_of($rb));

# after a failed join: c is no region, has no slot, origin or multi-region
# table, and the members have no slot for c
sub nothing_left
{
	my ($case) = @_;
	is($rc->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.regions'), '0',
		"after a join that failed ($case), c is not a region");
	is($rc->safe_psql('postgres', q{
			SELECT (SELECT count(*) FROM pg_replication_slots)
			     + (SELECT count(*) FROM pg_replication_origin)
			     + (SELECT count(*) FROM cosmosrep.tables)}),
		'0', "after a join that failed ($case), c has no slot, origin or multi-region table");
	is(slots_of($ra), $slots_before{a},
		"after a join that failed ($case), a has no new slot");
	is(slots_of($rb), $slots_before{b},
		"after a join that failed ($case), b has no new slot");
	return;
}

my ($ret, $out, $err) = join_c('c');
like($err, qr/ERROR:  multi-region table "public\.items" does not exist in this database/,
	'a join needs every multi-region table of the group');
nothing_left('missing table');

$rc->safe_psql('postgres', $ITEMS);
$rc->safe_psql('postgres', "INSERT INTO items VALUES (1, 1, 'local')");
($ret, $out, $err) = join_c('c');
like($err, qr/ERROR:  table "public\.items" is not empty/,
	'a join needs the multi-region tables empty');
nothing_left('table not empty');
$rc->safe_psql('postgres', 'TRUNCATE items');

($ret, $out, $err) = join_c('b');
like($err, qr/ERROR:  region "b" already exists/,
	'a join cannot take the name of a member');
nothing_left('name taken');

# a failure after the slots were made: the copy fails on a column that
# only c has
$rc->safe_psql('postgres', 'ALTER TABLE items ADD COLUMN extra int');
($ret, $out, $err) = join_c('c');
isnt($ret, 0, 'a join fails when a table has a column the group does not have');
like($err, qr/ERROR:  .*column "extra" of relation "items" does not exist/,
	'the error names the column');
nothing_left('copy failed');
$rc->safe_psql('postgres', 'ALTER TABLE items DROP COLUMN extra');

##########
# The load: each region inserts new keys from its own range and updates
# and deletes rows of the initial set that only it touches (a odd ids, b
# even ids), one transaction after the other.
##########

my $dir = PostgreSQL::Test::Utils::tempdir();
my %load;
for my $spec ([ $ra, 'a', 1_000_000, 1 ], [ $rb, 'b', 2_000_000, 2 ])
{
	my ($node, $name, $base, $first) = @$spec;
	my $script = "$dir/$name.sql";

	$node->safe_psql('postgres', "CREATE SEQUENCE load_seq");
	PostgreSQL::Test::Utils::append_to_file($script, <<"SQL");
\\set u random(0, @{[ $ROWS / 2 - 1 ]})
\\set d random(0, @{[ $ROWS / 2 - 1 ]})
BEGIN;
INSERT INTO items VALUES ($base + nextval('load_seq'), :u, '$name');
UPDATE items SET val = val + 1, note = '$name updated' WHERE id = 2 * :u + $first;
DELETE FROM items WHERE id = 2 * :d + $first;
COMMIT;
SQL
	my ($lout, $lerr) = ('', '');
	$load{$name} = {
		out => \$lout,
		err => \$lerr,
		h => IPC::Run::start(
			[
				'pgbench', '-n', '-c', '1', '-T', '300', '-R', '150',
				'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres'
			],
			'>', \$lout, '2>', \$lerr),
	};
}

# wait until a region has committed $more transactions of its load
sub wait_for_load
{
	my ($node, $more) = @_;
	my $target = $node->safe_psql('postgres', 'SELECT last_value FROM load_seq') + $more;
	$node->poll_query_until('postgres', "SELECT last_value >= $target FROM load_seq")
	  or die $node->name . ' does not make progress: ' . ${ $load{ $node->name }{err} };
	return;
}

wait_for_load($ra, 100);
wait_for_load($rb, 100);

##########
# c joins while a and b write
##########

($ret, $out, $err) = join_c('c');
is($ret, 0, 'c joins while a and b write') or diag $err;

# the load goes on for a while after the join
wait_for_load($ra, 300);
wait_for_load($rb, 300);

for my $name (sort keys %load)
{
	$load{$name}{h}->kill_kill;
	unlike(${ $load{$name}{err} }, qr/ERROR|abort/i, "the load of $name ran without errors");
}

is($ra->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE id BETWEEN 1000001 AND 1999999) > 0,
		       count(*) FILTER (WHERE id >= 2000001) > 0,
		       count(*) FILTER (WHERE id <= $ROWS) < $ROWS
		  FROM items}),
	't|t|t', 'both regions inserted, and deleted, rows under load');

wait_for_same_table([ $ra, $rb, $rc ], 'items');
my $count = $ra->safe_psql('postgres', 'SELECT count(*) FROM items');
is($rc->safe_psql('postgres', 'SELECT count(*) FROM items'), $count,
	'c holds as many rows as a');

for my $node ($ra, $rb, $rc)
{
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 2 FROM cosmosrep.replication_status WHERE state = 'streaming'"),
		$node->name . ' streams from both other regions');
}

# and the new region takes part in the group
$rc->safe_psql('postgres', "INSERT INTO items VALUES (3000001, 1, 'c')");
$ra->safe_psql('postgres', "UPDATE items SET note = 'a after join' WHERE id = 2000001");
wait_for_same_table([ $ra, $rb, $rc ], 'items');
is($rb->safe_psql('postgres',
		"SELECT count(*) FROM items WHERE (id, note) IN ((3000001, 'c'), (2000001, 'a after join'))"),
	'2', 'writes of the new region reach the group, and the group\'s reach it');

$_->stop for ($ra, $rb, $rc);
done_testing();
