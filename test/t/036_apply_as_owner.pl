# Apply runs as the table's owner, never as the superuser: a table owner's
# triggers that fire during apply run as that owner with
# SECURITY_RESTRICTED_OPERATION; a table enabled in one region becomes
# multi-region in another only if its owner there has the same name; and
# a version further ahead of the clock than cosmosrep.max_clock_skew stops
# replication with a clear error instead of dragging clocks forward.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my ($ra, $rb) = make_group(qw(a b));

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', q{
		CREATE ROLE alice LOGIN;
		CREATE ROLE bob LOGIN;
		GRANT CREATE ON SCHEMA public TO alice, bob;
		CREATE TABLE docs (id int PRIMARY KEY, body text);
		ALTER TABLE docs OWNER TO alice;
		CREATE TABLE audit (who name, superuser boolean, restricted boolean);
		ALTER TABLE audit OWNER TO alice;
	});
}

# in b, alice's trigger fires during apply (ENABLE ALWAYS) and records who
# it runs as, and whether it may change the session's role
$rb->safe_psql('postgres', q{
	SET ROLE alice;
	CREATE FUNCTION record_applier() RETURNS trigger LANGUAGE plpgsql
	SET search_path = public, pg_catalog AS $$
	DECLARE
		restricted boolean := false;
	BEGIN
		BEGIN
			PERFORM set_config('role', 'alice', true);
		EXCEPTION WHEN insufficient_privilege THEN
			restricted := true;
		END;
		INSERT INTO public.audit
		SELECT current_user, rolsuper, restricted FROM pg_roles WHERE rolname = current_user;
		RETURN NEW;
	END $$;
	CREATE TRIGGER record_applier AFTER INSERT ON docs
		FOR EACH ROW EXECUTE FUNCTION record_applier();
	ALTER TABLE docs ENABLE ALWAYS TRIGGER record_applier;
});

$ra->safe_psql('postgres', "SET ROLE alice; SELECT cosmosrep.enable_table('docs')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die 'enable did not arrive';
$ra->safe_psql('postgres', "SET ROLE alice; INSERT INTO docs VALUES (1, 'hello')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM audit')
  or die 'the row did not arrive';
is($rb->safe_psql('postgres', 'SELECT who || \',\' || superuser || \',\' || restricted FROM audit'),
	'alice,false,true',
	'a trigger fired by apply runs as the table owner, not a superuser, in a restricted operation');

# an enable for a table that another role owns here is refused until the
# owners match
$ra->safe_psql('postgres', q{
	CREATE TABLE notes (id int PRIMARY KEY);
	ALTER TABLE notes OWNER TO alice;
});
$rb->safe_psql('postgres', q{
	CREATE TABLE notes (id int PRIMARY KEY);
	ALTER TABLE notes OWNER TO bob;
});
$ra->safe_psql('postgres', "SET ROLE alice; SELECT cosmosrep.enable_table('notes')");
ok($rb->poll_query_until('postgres', q{
	SELECT last_error = 'table "public.notes" is owned by "alice" in region "a" but by "bob" in this region'
	  FROM cosmosrep.replication_status}),
	'an enable of a table owned by another role here stops with a clear error');
is($rb->safe_psql('postgres',
		"SELECT count(*) FROM cosmosrep.tables WHERE table_name = 'notes'::regclass"),
	'0', 'bob\'s table is not made multi-region');
$rb->safe_psql('postgres', 'ALTER TABLE notes OWNER TO alice');
ok($rb->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM cosmosrep.tables WHERE table_name = 'notes'::regclass"),
	'once the owners match, the enable applies');

# a version far ahead of the clock: a user's trigger in a overwrites it
$ra->safe_psql('postgres', q{
	CREATE FUNCTION far_future() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		NEW._cr_version := cosmosrep.current_version() + (600000::bigint << 21) + 1;
		RETURN NEW;
	END $$;
	CREATE TRIGGER zz_far_future BEFORE INSERT ON docs
		FOR EACH ROW EXECUTE FUNCTION far_future();
	INSERT INTO docs VALUES (2, 'from the future');
});
ok($rb->poll_query_until('postgres', q{
	SELECT state = 'error' AND last_error LIKE 'version % of region 1 is too far ahead of this region''s clock'
	  FROM cosmosrep.replication_status}),
	'a change whose version is too far ahead is refused, and the error is in replication_status');
my $clock_before = $rb->safe_psql('postgres', 'SELECT cosmosrep.current_version()');
my $future = $ra->safe_psql('postgres', 'SELECT _cr_version FROM docs WHERE id = 2');
cmp_ok($clock_before, '<', $future, "b's clock was not dragged forward");
is($rb->safe_psql('postgres', 'SELECT count(*) FROM docs WHERE id = 2'), '0',
	'the refused change is not applied');

# an operator who accepts it raises the bound; the stream goes on
$rb->safe_psql('postgres', q{
	ALTER SYSTEM SET cosmosrep.max_clock_skew = '1h';
	SELECT pg_reload_conf();
});
ok($rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM docs WHERE id = 2'),
	'with a larger cosmosrep.max_clock_skew the change applies');

$_->stop for ($ra, $rb);
done_testing();
