# A new arbiter's launcher, a superuser, resolves the tentative conflicts
# that no arbiter resolved (feed.c, cr_feed_take_over): a tenant's table
# and resolver, run there, must run as the tenant.  mallory owns schema app
# and its table; her resolver records as whom it runs and tries to make
# her a superuser.
use strict;
use warnings;

use CosmosRep::Converge;
use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @all = make_group(qw(r1 r2 r3));
my ($r1, $r2, $r3) = @all;

sub sql
{
	my ($node, $query) = @_;
	return $node->safe_psql('postgres', $query);
}

create_fence(\@all);
for my $node (@all)
{
	sql($node, q{
		CREATE ROLE mallory LOGIN;
		CREATE SCHEMA app AUTHORIZATION mallory;
		SET ROLE mallory;
		CREATE TABLE app.ledger (id int PRIMARY KEY, tags text[] NOT NULL);
		CREATE TABLE app.seen (who text, sess text);
		GRANT INSERT ON app.seen TO PUBLIC;
		CREATE FUNCTION app.merge(incoming app.ledger, existing app.ledger,
		                          is_tombstone boolean, conflicting app.ledger[])
		RETURNS app.ledger LANGUAGE plpgsql AS $$
		BEGIN
		    INSERT INTO app.seen VALUES (current_user, session_user);
		    BEGIN
		        EXECUTE 'ALTER ROLE mallory SUPERUSER';
		    EXCEPTION WHEN OTHERS THEN NULL;
		    END;
		    IF incoming IS NULL OR existing IS NULL THEN
		        RETURN coalesce(existing, incoming);
		    END IF;
		    existing.tags := ARRAY(SELECT DISTINCT t FROM unnest(existing.tags || incoming.tags) t ORDER BY 1);
		    RETURN existing;
		END
		$$;
	});
}
sql($r1, q{SET ROLE mallory;
	SELECT cosmosrep.enable_table('app.ledger', policy => 'custom', resolver => 'app.merge')});
sql($r1, q{SET ROLE mallory; INSERT INTO app.ledger SELECT i, '{}' FROM generate_series(1, 5) i});
ok(quiesce(\@all), 'every region holds mallory\'s ledger');

# the arbiter r1 cut off; r2 and r3 write the same rows
for my $other ($r2, $r3)
{
	pause_link($other, $r1);
	pause_link($r1, $other);
}
pause_link($r3, $r2);
pause_link($r2, $r3);
sql($r2, q{SET ROLE mallory; UPDATE app.ledger SET tags = '{r2}'});
sql($r3, q{SET ROLE mallory; UPDATE app.ledger SET tags = '{r3}'});
resume_link($r3, $r2);
resume_link($r2, $r3);
ok(quiesce([ $r2, $r3 ]), 'r2 and r3 applied each other\'s writes');
is(sql($r2, 'SELECT count(*) FROM cosmosrep.tentative_conflicts'), '5',
	'r2 holds the conflicts tentatively');

# a superuser makes r2 the arbiter: its launcher resolves them
sql($r2, q{SELECT cosmosrep.set_failover_priority('r2', 1)});
ok(poll_until($r2, 'SELECT count(*) FROM cosmosrep.tentative_conflicts', '0'),
	'r2\'s launcher resolved the tentative conflicts on becoming the arbiter');
is(sql($r2, q{SELECT count(*) FROM app.ledger WHERE tags = '{r2,r3}'}), '5',
	'the resolver\'s rows are written');
is(sql($r2, q{SELECT string_agg(DISTINCT who, ',') FROM app.seen}), 'mallory',
	'the launcher ran mallory\'s resolver as mallory, never as a superuser');
is(join(',', map { sql($_, q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}) } @all),
	'f,f,f', 'mallory is no superuser in any region');

$_->stop for @all;
done_testing();
