# Conflicts are detected exactly and recorded in every region that
# detects them: writes made after seeing each other never conflict;
# concurrent ones are recorded with their kind, both versions, both rows,
# the policy's resolution and the winner, in cosmosrep.conflicts (visible
# only to users who may read the table), the summary view and
# replication_status.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b c));
my ($ra, $rb, $rc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', 'CREATE TABLE docs (id int PRIMARY KEY, body text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('docs')");
$_->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  for ($rb, $rc);

sub conflicts
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT string_agg(format('%s %s %s %s>%s %s', key, kind, resolution,
		                         remote_region, local_region, winner_row->>'body'),
		                  E'\n' ORDER BY key::text, kind)
		  FROM cosmosrep.conflicts});
}

# a causal chain across three regions: each write is made after seeing
# the previous one
$ra->safe_psql('postgres', "INSERT INTO docs VALUES (1, 'a inserts')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM docs WHERE id = 1') or die;
$rb->safe_psql('postgres', "UPDATE docs SET body = 'b updates' WHERE id = 1");
$rc->poll_query_until('postgres', "SELECT body = 'b updates' FROM docs WHERE id = 1") or die;
$rc->safe_psql('postgres', 'DELETE FROM docs WHERE id = 1');
wait_for_same_table(\@nodes, 'docs');
$ra->safe_psql('postgres',
	"INSERT INTO docs VALUES (11, 'original'), (12, 'original'), (13, 'original')");
wait_for_same_table(\@nodes, 'docs');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.conflicts'), '0',
		$node->name . ': writes made after seeing each other are no conflicts');
}

# partition a and b; c stays connected to both
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
for my $node ($ra, $rb)
{
	$node->poll_query_until('postgres',
		"SELECT bool_or(state = 'paused' AND worker_pid IS NULL) FROM cosmosrep.replication_status")
	  or die $node->name . ' did not pause';
}

# each statement commits before the next, so b's writes are the newer ones
$ra->safe_psql('postgres', "INSERT INTO docs VALUES (10, 'a')");
$rb->safe_psql('postgres', "INSERT INTO docs VALUES (10, 'b')");
$ra->safe_psql('postgres', "UPDATE docs SET body = 'a' WHERE id = 11");
$rb->safe_psql('postgres', "UPDATE docs SET body = 'b' WHERE id = 11");
$ra->safe_psql('postgres', "UPDATE docs SET body = 'a' WHERE id = 12");
$rb->safe_psql('postgres', 'DELETE FROM docs WHERE id = 12');
$rb->safe_psql('postgres', "UPDATE docs SET body = 'b' WHERE id = 13");
$ra->safe_psql('postgres', 'DELETE FROM docs WHERE id = 13');

$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
wait_for_same_table(\@nodes, 'docs');
is($ra->safe_psql('postgres', 'SELECT string_agg(id || body, \',\' ORDER BY id) FROM docs'),
	'10b,11b', 'the newer write of every key wins in every region');

is(conflicts($ra), join("\n",
		'{"id": 10} insert_exists remote_applied b>a b',
		'{"id": 11} update_update remote_applied b>a b',
		'{"id": 12} delete_updated remote_applied b>a ',
		'{"id": 13} update_deleted local_kept b>a '),
	'a records each conflict with its kind, resolution and winner');
is(conflicts($rb), join("\n",
		'{"id": 10} insert_exists local_kept a>b b',
		'{"id": 11} update_update local_kept a>b b',
		'{"id": 12} update_deleted local_kept a>b ',
		'{"id": 13} delete_updated remote_applied a>b '),
	'b records the same conflicts from its side');
is($rc->safe_psql('postgres', 'SELECT count(DISTINCT key) FROM cosmosrep.conflicts'), '4',
	'c, which received both sides, records a conflict for every key too');

is($ra->safe_psql('postgres', q{
	SELECT (local_row->>'body') || ',' || (remote_row->>'body') || ','
	       || (local_version < remote_version)::text || ','
	       || (local_version = (local_row->>'_cr_version')::bigint)::text
	  FROM cosmosrep.conflicts WHERE kind = 'update_update'}),
	'a,b,true,true', 'both rows and both versions are recorded');
is($ra->safe_psql('postgres', q{
	SELECT bool_and(detected_at BETWEEN now() - interval '1 minute' AND now()
	                AND resolved_at = detected_at)
	  FROM cosmosrep.conflicts}),
	't', 'each conflict carries the time of the transaction that detected it');
is($ra->safe_psql('postgres', q{
	SELECT string_agg(kind || '=' || conflicts, ',' ORDER BY kind)
	  FROM cosmosrep.conflict_summary WHERE table_name = 'docs'::regclass}),
	'delete_updated=1,insert_exists=1,update_deleted=1,update_update=1',
	'the summary counts conflicts per table, kind and resolution');
is($ra->safe_psql('postgres',
		"SELECT conflicts FROM cosmosrep.replication_status WHERE source_region = 'b'"),
	'4', 'replication_status counts the conflicts per region pair');

# a user sees only the conflicts of tables they may read
$ra->safe_psql('postgres', 'CREATE ROLE reader');
is($ra->safe_psql('postgres',
		'SET ROLE reader; SELECT count(*) FROM cosmosrep.conflicts'),
	'0', 'a user who may not read the table sees none of its conflicts');
$ra->safe_psql('postgres', 'GRANT SELECT ON docs TO reader');
is($ra->safe_psql('postgres',
		'SET ROLE reader; SELECT count(*) FROM cosmosrep.conflicts'),
	'4', 'a user who may read the table sees its conflicts');

# an update that leaves a TOASTed value alone travels without it; one that
# loses is still decided, and recorded, where it arrives
for my $node (@nodes)
{
	$node->safe_psql('postgres', 'CREATE TABLE blobs (id int PRIMARY KEY, big text, n int)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('blobs')");
$ra->safe_psql('postgres', q{
	INSERT INTO blobs SELECT 1, string_agg(md5(g::text), ''), 0 FROM generate_series(1, 2000) g});
wait_for_same_table(\@nodes, 'blobs');
partition_regions(\@nodes);
$ra->safe_psql('postgres', 'UPDATE blobs SET n = 1');
$rb->safe_psql('postgres', 'UPDATE blobs SET n = 2');
heal_regions(\@nodes);
ok_all_streaming(\@nodes, 'every link streams after the heal');
wait_for_same_table(\@nodes, 'blobs');
is($_->safe_psql('postgres', "SELECT format('%s:%s', n, length(big)) FROM blobs"), '2:64000',
	$_->name . ': the newer update holds, with the whole TOASTed value')
  for @nodes;
is($rb->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || resolution, ',') FROM cosmosrep.conflicts
	 WHERE table_name = 'blobs'::regclass}),
	'update_update local_kept', 'b records the older update that arrived without its TOASTed value');
is($ra->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || resolution, ',') FROM cosmosrep.conflicts
	 WHERE table_name = 'blobs'::regclass}),
	'update_update remote_applied', 'a records the newer one, which it applied whole');

$_->stop for @nodes;
done_testing();
