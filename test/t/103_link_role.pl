# Regions connect to each other as a link role that is not a superuser
# (README, "Security"): LOGIN REPLICATION and what cosmosrep.grant_link_role
# grants.  With it a region joins (copying a table of another owner's
# schema), replicates, fetches a row from a peer (an update recreating a
# deleted row without its unchanged TOASTed value), removes a region, and
# a strong read asks the write region for its last write.  None of the
# code of mallory, who owns the table and its schema, runs as the link role
# on a peer: not her operator "=" for the key type put first in the link
# role's search_path (a superuser's mistake), not her row-level security
# policy (a fetch it would filter fails instead).  A link role without
# REPLICATION gives a clear error, in cosmosrep.replication_status and from
# join_region.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

# mallory's schema, a table she owns there, and her code, which records as
# whom it runs in app.seen; then the superuser's mistake: her schema first
# in the link role's search_path, before pg_catalog
sub setup_mallory
{
	my ($node, $link_role) = @_;
	$link_role //= 'cosmosrep_link';
	$node->safe_psql('postgres', qq{
		CREATE ROLE mallory LOGIN;
		CREATE SCHEMA app AUTHORIZATION mallory;
		SET ROLE mallory;
		CREATE TABLE app.seen (who text, what text);
		GRANT INSERT ON app.seen TO PUBLIC;
		CREATE FUNCTION app.spy_eq(int, int) RETURNS boolean LANGUAGE plpgsql AS \$\$
		BEGIN
			INSERT INTO app.seen VALUES (current_user, 'operator');
			RETURN \$1 OPERATOR(pg_catalog.=) \$2;
		END \$\$;
		CREATE OPERATOR app.= (LEFTARG = int, RIGHTARG = int, FUNCTION = app.spy_eq);
		CREATE FUNCTION app.spy_policy() RETURNS boolean LANGUAGE plpgsql AS \$\$
		BEGIN
			INSERT INTO app.seen VALUES (current_user, 'policy');
			RETURN true;
		END \$\$;
		CREATE TABLE app.docs (id int PRIMARY KEY, small int, doc text);
		ALTER TABLE app.docs ALTER COLUMN doc SET STORAGE EXTERNAL;
		-- keys of other kinds: text and an enum of hers, an array
		CREATE TYPE app.k AS ENUM ('x', 'y');
		CREATE FUNCTION app.spy_eq_k(app.k, app.k) RETURNS boolean LANGUAGE plpgsql AS \$\$
		BEGIN
			INSERT INTO app.seen VALUES (current_user, 'enum operator');
			RETURN \$1::text OPERATOR(pg_catalog.=) \$2::text;
		END \$\$;
		CREATE OPERATOR app.= (LEFTARG = app.k, RIGHTARG = app.k, FUNCTION = app.spy_eq_k);
		CREATE TABLE app.tags (name text, kind app.k, small int, doc text,
		                       PRIMARY KEY (name, kind));
		ALTER TABLE app.tags ALTER COLUMN doc SET STORAGE EXTERNAL;
		CREATE TABLE app.arrays (key int[] PRIMARY KEY, small int, doc text);
		ALTER TABLE app.arrays ALTER COLUMN doc SET STORAGE EXTERNAL;
		RESET ROLE;
		ALTER ROLE $link_role SET search_path = app, pg_catalog;
	});
	return;
}

# as whom mallory's code ran in $node, "" if it never did
sub seen
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(who || ' ' || what, ', '), '') FROM app.seen");
}

my ($ra, $rb) = make_group(qw(a b));
setup_mallory($_) for ($ra, $rb);

my $big = q{(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 8192) g)};
$ra->safe_psql('postgres', qq{
	SET ROLE mallory;
	SELECT cosmosrep.enable_table('app.docs');
	SELECT cosmosrep.enable_table('app.tags');
	SELECT cosmosrep.enable_table('app.arrays');
	INSERT INTO app.docs SELECT i, 0, $big FROM generate_series(1, 3) i;
	INSERT INTO app.tags VALUES ('n', 'x', 0, $big), ('n', 'y', 0, $big);
	INSERT INTO app.arrays VALUES ('{1,2}', 0, $big), ('{3}', 0, $big);
});
$rb->poll_query_until('postgres',
	'SELECT (SELECT count(*) FROM app.docs) + (SELECT count(*) FROM app.tags) + (SELECT count(*) FROM app.arrays) = 7')
  or die 'the rows of mallory\'s tables did not reach b';

##########
# A region joins through the link role
##########

my $rc = new_region('c');
setup_mallory($rc);
$rc->safe_psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('c', '%s', via => '%s')",
	region_dsn($rc), region_dsn($ra)));
my @nodes = ($ra, $rb, $rc);
ok_all_streaming(\@nodes, 'every link streams after c joined as the link role');
wait_for_same_table(\@nodes, 'app.docs');

for my $node (@nodes)
{
	ok($node->poll_query_until('postgres', q{
			SELECT count(*) = 2 AND bool_and(r.rolname = 'cosmosrep_link' AND NOT r.rolsuper)
			  FROM pg_stat_replication s JOIN pg_roles r ON r.oid = s.usesysid}),
		$node->name . ': the other regions stream from it as cosmosrep_link, not a superuser');
}

$rc->safe_psql('postgres', 'UPDATE app.docs SET small = 1 WHERE id = 1');
$ra->safe_psql('postgres', 'INSERT INTO app.docs VALUES (4, 0, NULL)');
wait_for_same_table(\@nodes, 'app.docs');
is($rb->safe_psql('postgres', "SELECT string_agg(id || '=' || small, ',' ORDER BY id) FROM app.docs"),
	'1=1,2=0,3=0,4=0', 'writes of the joined region and to it replicate');

##########
# The apply fetches a row from its peer
##########

$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
for my $node ($ra, $rb)
{
	$node->poll_query_until('postgres', q{
		SELECT bool_and(worker_pid IS NULL) FROM cosmosrep.replication_status
		 WHERE state = 'paused'})
	  or die $node->name . ' did not pause';
}
$rb->safe_psql('postgres', q{
	DELETE FROM app.docs WHERE id = 3;
	DELETE FROM app.tags WHERE kind = 'y';
	DELETE FROM app.arrays WHERE key = '{1,2}'});
# newer than the deletes
$ra->safe_psql('postgres', q{
	UPDATE app.docs SET small = 5 WHERE id = 3;
	UPDATE app.tags SET small = 5 WHERE kind = 'y';
	UPDATE app.arrays SET small = 5 WHERE key = '{1,2}'});
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
ok(wait_for_value($rb, 'SELECT small FROM app.docs WHERE id = 3', '5'),
	'an update newer than a delete recreates the row in b');
is($rb->safe_psql('postgres', 'SELECT md5(doc) FROM app.docs WHERE id = 3'),
	$ra->safe_psql('postgres', 'SELECT md5(doc) FROM app.docs WHERE id = 3'),
	'the recreated row carries the TOASTed value b fetched from a');
is($ra->safe_psql('postgres',
		"SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity WHERE application_name = 'cosmosrep apply'"),
	'cosmosrep_link', 'b fetched the row from a as cosmosrep_link');
for my $t (['app.tags', q{kind = 'y'}, 'a key of text and an enum'],
	['app.arrays', q{key = '{1,2}'}, 'an array key'])
{
	my ($table, $where, $what) = @$t;
	ok(wait_for_value($rb, "SELECT small || ' ' || md5(doc) FROM $table WHERE $where",
			$ra->safe_psql('postgres', "SELECT small || ' ' || md5(doc) FROM $table WHERE $where")),
		"the row of $what is recreated in b with the TOASTed value fetched from a");
}
wait_for_same_table(\@nodes, $_) for qw(app.docs app.tags app.arrays);

is(seen($_), '', $_->name . ': mallory\'s operators never ran, though first in the link role\'s search_path')
  for @nodes;

##########
# A region is removed through the link role
##########

$ra->safe_psql('postgres', "SELECT cosmosrep.remove_region('c')");
for my $node ($ra, $rb)
{
	is($node->safe_psql('postgres', q{
			SELECT string_agg(region_name, ',' ORDER BY region_name) FROM cosmosrep.regions}),
		'a,b', $node->name . ': c is removed from the group');
	ok($node->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM pg_replication_slots
			   WHERE slot_name LIKE 'cr\_c\_%' OR slot_name LIKE 'cr\_%\_c'}),
		$node->name . ': the slots to and from c are gone');
}
is($rc->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.regions WHERE NOT is_local'),
	'0', 'c forgot the other regions, called as cosmosrep_link');
@nodes = ($ra, $rb);
$rc->stop;

##########
# A strong read asks the write region as the link role
##########

$rb->safe_psql('postgres', "SELECT cosmosrep.set_multiple_write_regions(false, 'a')");
$ra->poll_query_until('postgres',
	'SELECT count(*) = 1 FROM cosmosrep.regions WHERE accepts_writes') or die 'a is not the write region';
$ra->append_conf('postgresql.conf', 'log_connections = on');
$ra->reload;
$rb->append_conf('postgresql.conf', "cosmosrep.default_consistency = 'strong'");
$rb->reload;
$rb->poll_query_until('postgres', 'SHOW cosmosrep.default_consistency', 'strong') or die;
my $log_offset = -s $ra->logfile;
$ra->safe_psql('postgres', 'INSERT INTO app.docs VALUES (6, 6, NULL)');
is($rb->safe_psql('postgres', 'SELECT small FROM app.docs WHERE id = 6'), '6',
	'a strong read in b sees the last write of the write region');
like(slurp_file($ra->logfile, $log_offset),
	qr/connection authorized: user=cosmosrep_link database=postgres application_name=cosmosrep strong read/,
	'the strong read reached the write region as cosmosrep_link');
$rb->append_conf('postgresql.conf', "cosmosrep.default_consistency = 'eventual'");
$rb->reload;
$rb->poll_query_until('postgres', 'SHOW cosmosrep.default_consistency', 'eventual') or die;
$ra->safe_psql('postgres', 'SELECT cosmosrep.set_multiple_write_regions(true)');
$rb->poll_query_until('postgres',
	'SELECT count(*) = 2 FROM cosmosrep.regions WHERE accepts_writes') or die 'b does not write again';

##########
# A link role without REPLICATION
##########

$ra->safe_psql('postgres', q{
	ALTER ROLE cosmosrep_link NOREPLICATION;
	SELECT pg_terminate_backend(pid) FROM pg_stat_replication});
ok($rb->poll_query_until('postgres', q{
		SELECT last_error LIKE '%could not connect to region "a"%must be superuser or replication role to start walsender%'
		  FROM cosmosrep.replication_status WHERE source_region = 'a'}),
	'a link role without REPLICATION: replication_status shows why the link does not stream')
  or diag($rb->safe_psql('postgres', 'SELECT last_error FROM cosmosrep.replication_status'));
$ra->safe_psql('postgres', 'ALTER ROLE cosmosrep_link REPLICATION');
$ra->safe_psql('postgres', 'INSERT INTO app.docs VALUES (5, 5, NULL)');
ok(wait_for_value($rb, 'SELECT small FROM app.docs WHERE id = 5', '5'),
	'b applies the writes of a again once the role has REPLICATION');
ok_all_streaming(\@nodes, 'the link streams again once the role has REPLICATION');

my $rd = new_region('d', link_role => 0);
create_link_role($rd, 'link_without_replication', 'LOGIN');
setup_mallory($rd, 'link_without_replication');
my ($ret, $out, $err) = $rd->psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('d', '%s', via => '%s')",
	region_dsn($rd, undef, user => 'link_without_replication'), region_dsn($ra)));
like($err,
	qr/ERROR:  could not connect to region "d": .*must be superuser or replication role to start walsender/,
	'join_region with a link role without REPLICATION fails with a clear error');
is($ra->safe_psql('postgres', 'SELECT count(*) FROM cosmosrep.regions'), '2',
	'the failed join left the group unchanged');
$rd->stop;

##########
# Row-level security of mallory's table does not run as the link role
##########

$ra->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	SET ROLE mallory;
	ALTER TABLE app.docs ENABLE ROW LEVEL SECURITY;
	CREATE POLICY spy ON app.docs USING (app.spy_policy());
});
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
for my $node ($ra, $rb)
{
	$node->poll_query_until('postgres', q{
		SELECT bool_and(worker_pid IS NULL) FROM cosmosrep.replication_status
		 WHERE state = 'paused'})
	  or die $node->name . ' did not pause';
}
$rb->safe_psql('postgres', 'DELETE FROM app.docs WHERE id = 2');
$ra->safe_psql('postgres', 'UPDATE app.docs SET small = 7 WHERE id = 2');
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
ok($rb->poll_query_until('postgres', q{
		SELECT last_error LIKE '%query would be affected by row-level security policy for table "docs"%'
		  FROM cosmosrep.replication_status WHERE source_region = 'a'}),
	'a fetch that a row-level security policy would filter fails with a clear error')
  or diag($rb->safe_psql('postgres', 'SELECT last_error FROM cosmosrep.replication_status'));
is(seen($ra), '', 'a: mallory\'s policy never ran as the link role');

$_->stop for @nodes;
done_testing();
