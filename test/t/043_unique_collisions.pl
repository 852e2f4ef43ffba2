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
ok(wait_for_value($_, 'SELECT count(*) FROM users WHERE id = 4', '1'),
	$_->name . ': later changes replicate')
  for @nodes;

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

# under last_writer_wins on a path the higher path value keeps the value,
# though its row is the older one; under manual the newer row keeps it for
# now and the collision waits in the feed
for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE ranked (id int PRIMARY KEY, email text UNIQUE, prio int);
		CREATE TABLE held (id int PRIMARY KEY, email text UNIQUE);
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('ranked', path => 'prio');
	SELECT cosmosrep.enable_table('held', policy => 'manual');
});
$_->poll_query_until('postgres', 'SELECT count(*) = 3 FROM cosmosrep.tables')
  or die for ($rb, $rc);
partition_regions(\@nodes);
$ra->safe_psql('postgres', q{
	INSERT INTO ranked VALUES (1, 'r@example.com', 9);
	INSERT INTO held VALUES (1, 'h@example.com');
});
$rb->safe_psql('postgres', q{
	INSERT INTO ranked VALUES (2, 'r@example.com', 1);
	INSERT INTO held VALUES (2, 'h@example.com');
});
heal_regions(\@nodes);
ok_all_streaming(\@nodes, 'every link streams after the heal');
wait_for_same_table(\@nodes, 'ranked');
wait_for_same_table(\@nodes, 'held');
is($_->safe_psql('postgres', q{SELECT string_agg(id || ':' || prio, ' ') FROM ranked}), '1:9',
	$_->name . ': the older row with the higher path value keeps the e-mail')
  for @nodes;
is($_->safe_psql('postgres', q{SELECT string_agg(id::text, ' ') FROM held}), '2',
	$_->name . ': under manual the newer row keeps the e-mail for now')
  for @nodes;
is($_->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || resolution, ', ') FROM cosmosrep.conflict_feed
	 WHERE table_name = 'held'::regclass}),
	'unique_collision pending', $_->name . ': and the collision waits in the feed')
  for ($ra, $rb);

$_->stop for @nodes;
done_testing();
