# A hostile tenant's code never runs as a superuser.  mallory owns a
# schema and a multi-region table whose every piece of user code (an
# ENABLE ALWAYS trigger, a CHECK constraint, a domain CHECK, a generated
# column, an index expression, a default, a resolver) records as whom it
# runs and tries ALTER ROLE mallory SUPERUSER.  cosmosrep then runs that
# code in every way it can: apply, the careful path that re-reads a
# rejected change for the feed, enable_table by a superuser of a table
# with rows, the feed functions called by a superuser (resolve_conflict,
# resolve_conflict_with_row, reapply_conflict of a rejected change and of
# a resolver's error), a resolver that its owner may no longer execute,
# and join_region's copy by a superuser.  Every time the code runs as
# mallory with an empty search_path, mallory never becomes superuser,
# replication keeps streaming and the regions end identical.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

# mallory's schema, log and table; $refuse adds, in one region only, a
# trigger that rejects the rows noted 'refuse-me'
sub tenant_setup
{
	my ($node, $refuse) = @_;

	$node->safe_psql('postgres', q{
		CREATE ROLE mallory LOGIN;
		CREATE SCHEMA app AUTHORIZATION mallory;
		SET ROLE mallory;
		-- unlogged: a write of an index expression inside a speculative
		-- insertion (INSERT ... ON CONFLICT) would stop logical decoding
		CREATE UNLOGGED TABLE app.seen (who name, what text, path text);
		GRANT INSERT ON app.seen TO PUBLIC;

		-- records who runs it and tries to become superuser
		CREATE FUNCTION app.spy(what text) RETURNS boolean
		LANGUAGE plpgsql AS $$
		BEGIN
			BEGIN
				ALTER ROLE mallory SUPERUSER;
			EXCEPTION WHEN OTHERS THEN
				NULL;
			END;
			INSERT INTO app.seen VALUES (current_user, what, current_setting('search_path'));
			RETURN true;
		END $$;
		-- the same, declared immutable for generated columns and indexes
		CREATE FUNCTION app.spy_int(what text, v int) RETURNS int
		IMMUTABLE LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM app.spy(what);
			RETURN v;
		END $$;
		CREATE FUNCTION app.spy_text(what text) RETURNS text
		LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM app.spy(what);
			RETURN what;
		END $$;
		CREATE FUNCTION app.spy_trigger() RETURNS trigger
		LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM app.spy('trigger');
			RETURN NEW;
		END $$;

		CREATE DOMAIN app.qty AS int CHECK (app.spy('domain'));
		CREATE TABLE app.items (
			id int PRIMARY KEY,
			q app.qty,
			note text DEFAULT app.spy_text('default'),
			twice int GENERATED ALWAYS AS (app.spy_int('generated', q) * 2) STORED,
			CHECK (app.spy('check')));
		CREATE INDEX items_q ON app.items (app.spy_int('index', q));
		CREATE TRIGGER spy BEFORE INSERT OR UPDATE ON app.items
			FOR EACH ROW EXECUTE FUNCTION app.spy_trigger();
		ALTER TABLE app.items ENABLE ALWAYS TRIGGER spy;

		CREATE UNLOGGED TABLE app.ready (ok boolean);
		GRANT INSERT ON app.ready TO PUBLIC;
		CREATE FUNCTION app.merge(incoming app.items, existing app.items,
		                          is_tombstone boolean, conflicting app.items[])
		RETURNS app.items LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM app.spy('resolver');
			IF NOT EXISTS (SELECT FROM app.ready) THEN
				RAISE EXCEPTION 'resolver not ready';
			END IF;
			incoming.note := 'merged by resolver';
			RETURN incoming;
		END $$;
	});
	return unless $refuse;
	$node->safe_psql('postgres', q{
		SET cosmosrep.ddl_replication = warn;
		SET ROLE mallory;
		CREATE FUNCTION app.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.note = 'refuse-me' THEN
				RAISE EXCEPTION 'row % refused here', NEW.id;
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON app.items
			FOR EACH ROW EXECUTE FUNCTION app.refuse();
		ALTER TABLE app.items ENABLE ALWAYS TRIGGER refuse;
	});
	return;
}

# mallory's code ran as a superuser in none of the regions, and mallory
# is not a superuser in any of them
sub no_superuser_ran
{
	my ($nodes, $what) = @_;

	for my $node (@$nodes)
	{
		is($node->safe_psql('postgres', q{
			SELECT coalesce(string_agg(DISTINCT s.who || ' ran ' || s.what, ', '), 'none')
			  FROM app.seen s JOIN pg_roles r ON r.rolname = s.who
			 WHERE r.rolsuper}),
			'none', $node->name . ": $what: no code of mallory's ran as a superuser");
		is($node->safe_psql('postgres',
				"SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"),
			'f', $node->name . ": $what: mallory is not a superuser");
	}
	return;
}

# what of mallory's code ran in $node as mallory, with an empty
# search_path, since the log was last emptied
sub ran_as_mallory
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(DISTINCT what, ',' ORDER BY what), '')
		  FROM app.seen WHERE who = 'mallory' AND path IN ('', '""')});
}

# empty the log, and undo a past escalation, so that each case counts
# on its own
sub forget_log
{
	my (@nodes) = @_;
	$_->safe_psql('postgres', 'TRUNCATE app.seen; ALTER ROLE mallory NOSUPERUSER')
	  for @nodes;
	return;
}

my @nodes = make_group(qw(r1 r2));
my ($r1, $r2) = @nodes;
tenant_setup($r1, 0);
tenant_setup($r2, 1);

# enable_table by a superuser of mallory's table with rows: the rows
# travel and r2 applies them as mallory
$r1->safe_psql('postgres', q{
	SET ROLE mallory;
	INSERT INTO app.items (id, q) SELECT g, g FROM generate_series(1, 4) g});
forget_log(@nodes);
$r1->safe_psql('postgres', "SELECT cosmosrep.enable_table('app.items', policy => 'manual')");
ok($r2->poll_query_until('postgres', 'SELECT count(*) = 4 FROM app.items'),
	'the rows of the table enabled by a superuser reach r2');
wait_for_same_table(\@nodes, 'app.items');
no_superuser_ran(\@nodes, 'enable_table by a superuser');
is(ran_as_mallory($r2), 'check,domain,generated,index,trigger',
	'r2 applies the enabled rows running every piece of mallory\'s code as mallory');

# apply
forget_log(@nodes);
$r1->safe_psql('postgres', "SET ROLE mallory; INSERT INTO app.items (id, q, note) VALUES (5, 5, 'five')");
ok($r2->poll_query_until('postgres', 'SELECT count(*) = 1 FROM app.items WHERE id = 5'),
	'a write of mallory reaches r2');
no_superuser_ran(\@nodes, 'apply');
is(ran_as_mallory($r2), 'check,domain,generated,index,trigger',
	'apply runs mallory\'s code as mallory');

# the careful path: r2 rejects row 6 every time; the change goes to r2's
# feed, read again as mallory (only that reading leaves a trace: every
# attempt was rolled back)
forget_log(@nodes);
$r1->safe_psql('postgres', "SET ROLE mallory; INSERT INTO app.items (id, q, note) VALUES (6, 6, 'refuse-me')");
ok($r2->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM cosmosrep.conflict_feed WHERE kind = 'apply_error'"),
	'the rejected change waits in r2\'s feed');
no_superuser_ran(\@nodes, 'the careful path');
is(ran_as_mallory($r2), 'domain',
	'the careful path reads the rejected change again as mallory (the domain check ran)');
$r1->safe_psql('postgres', "SET ROLE mallory; INSERT INTO app.items (id, q, note) VALUES (7, 7, 'after')");
ok($r2->poll_query_until('postgres', 'SELECT count(*) = 1 FROM app.items WHERE id = 7'),
	'r2 applies what comes after the rejected change');

# reapply_conflict of the rejected change by a superuser, once the cause
# is gone: the write fires mallory's code as mallory
forget_log(@nodes);
$r2->safe_psql('postgres', 'DROP TRIGGER refuse ON app.items');
my $rejected = $r2->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE kind = 'apply_error'");
is($r2->safe_psql('postgres', "SELECT cosmosrep.reapply_conflict($rejected)"),
	'remote_applied', 'a superuser applies the rejected change again');
no_superuser_ran(\@nodes, 'reapply_conflict of a rejected change');
is(ran_as_mallory($r2), 'check,generated,index,trigger',
	'reapply_conflict writes the row running mallory\'s code as mallory');
wait_for_same_table(\@nodes, 'app.items');

# pending conflicts (manual) resolved by a superuser in r1
partition_regions(\@nodes);
$r1->safe_psql('postgres', "SET ROLE mallory; UPDATE app.items SET q = q + 10 WHERE id IN (1, 2)");
$r2->safe_psql('postgres', "SET ROLE mallory; UPDATE app.items SET q = q + 20 WHERE id IN (1, 2)");
heal_regions(\@nodes);
ok($r1->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM cosmosrep.conflict_feed
		  WHERE resolution = 'pending' AND key->>'id' IN ('1', '2')"),
	'both conflicts wait in r1\'s feed');
forget_log(@nodes);
my ($id1, $keep1) = split /\|/, $r1->safe_psql('postgres',
	"SELECT conflict_id, local_version FROM cosmosrep.conflict_feed WHERE key->>'id' = '1'");
$r1->safe_psql('postgres', "SELECT cosmosrep.resolve_conflict($id1, $keep1)");
no_superuser_ran(\@nodes, 'resolve_conflict by a superuser');
is(ran_as_mallory($r1), 'check,generated,index,trigger',
	'resolve_conflict writes the row running mallory\'s code as mallory');
forget_log(@nodes);
my $id2 = $r1->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE key->>'id' = '2'");
$r1->safe_psql('postgres',
	"SELECT cosmosrep.resolve_conflict_with_row($id2, '{\"id\": 2, \"q\": 99, \"note\": \"chosen\"}')");
no_superuser_ran(\@nodes, 'resolve_conflict_with_row by a superuser');
is(ran_as_mallory($r1), 'check,domain,generated,index,trigger',
	'resolve_conflict_with_row reads and writes the row running mallory\'s code as mallory');
wait_for_same_table(\@nodes, 'app.items');

# join_region by a superuser: the copy runs mallory's code as mallory
my $r3 = new_region('r3');
tenant_setup($r3, 0);
forget_log(@nodes, $r3);
$r3->safe_psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('r3', '%s', via => '%s')",
	region_dsn($r3), region_dsn($r1)));
push @nodes, $r3;
no_superuser_ran(\@nodes, 'join_region\'s copy');
is(ran_as_mallory($r3), 'check,domain,generated,index,trigger',
	'join_region copies the rows running mallory\'s code as mallory');
is($r3->safe_psql('postgres', 'SELECT count(*) FROM app.items'), '7',
	'r3 holds every row after the join');
$r3->safe_psql('postgres', "SET ROLE mallory; INSERT INTO app.items (id, q, note) VALUES (8, 8, 'from r3')");
wait_for_same_table(\@nodes, 'app.items');

# a resolver's error entry applied again by a superuser whose search_path
# names mallory's schema: the resolver runs as mallory with an empty one
$r1->safe_psql('postgres',
	"SET ROLE mallory; SELECT cosmosrep.alter_table_policy('app.items', 'custom', resolver => 'app.merge')");
for my $node ($r2, $r3)
{
	ok($node->poll_query_until('postgres', "SELECT policy = 'custom' FROM cosmosrep.tables"),
		$node->name . ' takes the custom policy');
}
partition_regions(\@nodes);
# (r1's write the newer: the failed conflict stays decided by version, and
# r1 keeps its row)
$r2->safe_psql('postgres', "SET ROLE mallory; UPDATE app.items SET q = 32 WHERE id = 3");
$r1->safe_psql('postgres', "SET ROLE mallory; UPDATE app.items SET q = 31 WHERE id = 3");
heal_regions(\@nodes);
ok_all_streaming(\@nodes, 'a failing resolver does not stop replication');
ok($r1->poll_query_until('postgres', q{
		SELECT error = 'resolver not ready' FROM cosmosrep.conflict_feed WHERE key->>'id' = '3'}),
	'the resolver\'s failure waits in r1\'s feed');
$_->safe_psql('postgres', 'INSERT INTO app.ready VALUES (true)') for @nodes;
forget_log(@nodes);
my $id3 = $r1->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE key->>'id' = '3'");
is($r1->safe_psql('postgres', "SET search_path = app, public; SELECT cosmosrep.reapply_conflict($id3)"),
	'merged', 'a superuser applies the entry again through the resolver');
no_superuser_ran(\@nodes, 'reapply_conflict through a resolver');
is($r1->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT who || ' [' || path || ']', ',') FROM app.seen WHERE what = 'resolver'}),
	'mallory []', 'reapply_conflict runs the resolver as mallory with an empty search_path');
is(ran_as_mallory($r1), 'check,generated,index,resolver,trigger',
	'reapply_conflict writes the resolver\'s row running mallory\'s code as mallory');
for my $node (@nodes)
{
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM cosmosrep.conflict_feed WHERE key->>'id' = '3'"),
		$node->name . ': the entry of key 3 is resolved');
}
wait_for_same_table(\@nodes, 'app.items');

# a resolver that its owner may no longer execute fails like any resolver:
# it does not run, and the conflict waits in the feed
$_->safe_psql('postgres', 'SET ROLE mallory; REVOKE EXECUTE ON FUNCTION app.merge FROM PUBLIC, mallory')
  for @nodes;
forget_log(@nodes);
partition_regions(\@nodes);
$r1->safe_psql('postgres', "SET ROLE mallory; UPDATE app.items SET q = 41 WHERE id = 4");
$r2->safe_psql('postgres', "SET ROLE mallory; UPDATE app.items SET q = 42 WHERE id = 4");
heal_regions(\@nodes);
ok_all_streaming(\@nodes, 'a resolver its owner may not execute does not stop replication');
ok($r1->poll_query_until('postgres', q{
		SELECT error = 'permission denied for function merge'
		  FROM cosmosrep.conflict_feed WHERE key->>'id' = '4'}),
	'a resolver its owner may not execute fails: the conflict is an error entry');
is($r1->safe_psql('postgres', "SELECT count(*) FROM app.seen WHERE what = 'resolver'"), '0',
	'the resolver did not run');
$_->safe_psql('postgres', 'SET ROLE mallory; GRANT EXECUTE ON FUNCTION app.merge TO mallory')
  for @nodes;
my $id4 = $r1->safe_psql('postgres',
	"SELECT conflict_id FROM cosmosrep.conflict_feed WHERE key->>'id' = '4'");
is($r1->safe_psql('postgres', "SELECT cosmosrep.reapply_conflict($id4)"), 'merged',
	'once allowed again, the entry applies through the resolver');

# the group goes on, identical
$r3->safe_psql('postgres', "SET ROLE mallory; INSERT INTO app.items (id, q, note) VALUES (9, 9, 'last')");
wait_for_same_table(\@nodes, 'app.items');
ok_all_streaming(\@nodes, 'every link streams at the end');
no_superuser_ran(\@nodes, 'the end');

$_->stop for @nodes;
done_testing();
