# Collisions on secondary unique indexes: rows of different keys written
# concurrently with the same value of a unique column.  The newer row
# keeps the value in every region, the rows it displaces are kept whole in
# cosmosrep.conflicts, and replication goes on.  Before, such a change
# stopped replication from its region for good ("duplicate key value
# violates unique constraint").
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b c));
my ($ra, $rb, $rc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres',
		'CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, phone text UNIQUE, name text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('users')");
$_->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die for ($rb, $rc);

sub heal
{
	heal_regions(\@nodes);
	ok_all_streaming(\@nodes, 'every link streams after the heal');
	wait_for_same_table(\@nodes, 'users');
	return;
}

sub users
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(id || ':' || coalesce(email, '-') || ':' || coalesce(phone, '-') || ':' || name, ' ' ORDER BY id) FROM users");
}

# the same e-mail under three ids, one per region, at once; c's is newest
partition_regions(\@nodes);
$ra->safe_psql('postgres', "INSERT INTO users VALUES (1, 'x\@example.com', NULL, 'a')");
$rb->safe_psql('postgres', "INSERT INTO users VALUES (2, 'x\@example.com', NULL, 'b')");
$rc->safe_psql('postgres', "INSERT INTO users VALUES (3, 'x\@example.com', NULL, 'c')");
heal();
is(users($_), '3:x@example.com:-:c', $_->name . ': the newest row keeps the e-mail')
  for @nodes;
is($ra->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || resolution || ' ' || (local_row->>'id') || '/' || (remote_row->>'id'), ', '
	                  ORDER BY conflict_id)
	  FROM cosmosrep.conflicts}),
	'unique_collision remote_applied 1/2, unique_collision remote_applied 2/3',
	'a records both collisions, with the displaced rows whole')
  or diag($ra->safe_psql('postgres', 'SELECT * FROM cosmosrep.conflicts'));
is($rc->safe_psql('postgres', q{
	SELECT string_agg(resolution || ' ' || (local_row->>'id') || '/' || (remote_row->>'id'), ', '
	                  ORDER BY remote_row->>'id')
	  FROM cosmosrep.conflicts}),
	'local_kept 3/1, local_kept 3/2', 'c keeps its row against both older ones');
is($rb->safe_psql('postgres', q{
	SELECT DISTINCT local_row->>'name' FROM cosmosrep.conflicts
	 WHERE local_row->>'id' = '2'}),
	'b', 'the displaced row of b can be restored from the view');

# replication goes on
$rb->safe_psql('postgres', "INSERT INTO users VALUES (4, 'y\@example.com', '555', 'b')");
wait_for_value($_, 'SELECT count(*) FROM users WHERE id = 4', '1') for @nodes;
pass('later changes replicate');

# one newer row collides with two older rows on two unique indexes
partition_regions(\@nodes);
$ra->safe_psql('postgres', "INSERT INTO users VALUES (5, 'p\@example.com', NULL, 'a')");
$rb->safe_psql('postgres', "INSERT INTO users VALUES (6, NULL, '777', 'b')");
$rc->safe_psql('postgres', "INSERT INTO users VALUES (7, 'p\@example.com', '777', 'c')");
heal();
is(users($_), '3:x@example.com:-:c 4:y@example.com:555:b 7:p@example.com:777:c',
	$_->name . ': the newer row displaces both older ones')
  for @nodes;

# an older row colliding with two newer ones is dropped, and both stay
partition_regions(\@nodes);
$rc->safe_psql('postgres', "INSERT INTO users VALUES (8, 'q\@example.com', '888', 'c')");
$ra->safe_psql('postgres', "INSERT INTO users VALUES (9, 'q\@example.com', NULL, 'a')");
$rb->safe_psql('postgres', "INSERT INTO users VALUES (10, NULL, '888', 'b')");
heal();
is(users($_), '3:x@example.com:-:c 4:y@example.com:555:b 7:p@example.com:777:c '
	  . '9:q@example.com:-:a 10:-:888:b',
	$_->name . ': the older row loses to both newer ones')
  for @nodes;

# an update that moves a row onto another row's value
partition_regions(\@nodes);
$ra->safe_psql('postgres', "UPDATE users SET email = 'z\@example.com' WHERE id = 4");
$rb->safe_psql('postgres', "UPDATE users SET email = 'z\@example.com' WHERE id = 9");
heal();
is(users($_), '3:x@example.com:-:c 7:p@example.com:777:c 9:z@example.com:-:a 10:-:888:b',
	$_->name . ': the newer update keeps the value, the row of the older one goes')
  for @nodes;
is($ra->safe_psql('postgres', q{
	SELECT resolution || ' ' || (local_row->>'email') FROM cosmosrep.conflicts
	 WHERE local_row->>'id' = '4' AND remote_row->>'id' = '9'}),
	'remote_applied z@example.com', 'a records the row of its own update that lost, whole');
is($rb->safe_psql('postgres', q{
	SELECT resolution || ' ' || (remote_row->>'email') FROM cosmosrep.conflicts
	 WHERE local_row->>'id' = '9' AND remote_row->>'id' = '4'}),
	'local_kept z@example.com', 'b records the update of a that lost');

$_->stop for @nodes;
done_testing();
