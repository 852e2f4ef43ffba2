# Issue 23 item 5: when the arbiter goes, the next one resolves what it
# never did.  The arbiter r1 is cut off; r2 and r3 update the same
# payments, and each decides the conflicts by version, tentatively
# (cosmosrep.tentative_conflicts), recording nothing in
# cosmosrep.conflicts.  r2 then gets failover priority 1 and becomes the
# arbiter: it resolves its tentative conflicts with the resolver (the union
# of the tags, which neither write holds alone), once each, and its
# resolved messages settle r3's.  Then r1 comes back, still believing
# itself the arbiter until the priority change reaches it: it resolves a
# conflict too, and the regions still end identical, every payment with
# every tag, written by the arbiter r2.
use strict;
use warnings;

use CosmosRep::Converge;
use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @all = make_group(qw(r1 r2 r3));
my ($r1, $r2, $r3) = @all;
my %id = split /[|\n]/,
  $r1->safe_psql('postgres', 'SELECT region_name, region_id FROM cosmosrep.regions');
my $KEYS = 10;

sub sql
{
	my ($node, $query) = @_;
	return $node->safe_psql('postgres', $query);
}

create_fence(\@all);
for my $node (@all)
{
	sql($node, q{
		CREATE TABLE payments (id int PRIMARY KEY, tags text[] NOT NULL, touched text NOT NULL);
		-- as Cosmos DB's examples: a tie keeps existing; the tags are united
		CREATE FUNCTION resolve_payment(incoming payments, existing payments,
		                                is_tombstone boolean, conflicting payments[])
		RETURNS payments LANGUAGE plpgsql AS $$
		BEGIN
		    IF incoming IS NULL OR existing IS NULL THEN
		        RETURN coalesce(existing, incoming);
		    END IF;
		    existing.tags := ARRAY(SELECT DISTINCT t COLLATE "C"
		                             FROM unnest(existing.tags || incoming.tags) t ORDER BY 1);
		    RETURN existing;
		END
		$$;
	});
}
sql($r1, q{
	SELECT cosmosrep.enable_table('payments', policy => 'custom', resolver => 'resolve_payment');
});
sql($r1, "INSERT INTO payments SELECT i, '{created}', 'r1' FROM generate_series(1, $KEYS) i");
ok(quiesce(\@all), 'every region holds the payments');

is(join(',', map { sql($_, 'SELECT cosmosrep.arbiter()') } @all), 'r1,r1,r1',
	'r1, the first region, is the arbiter');

# r1 cut off both ways; r2 and r3 write the same payments
for my $other ($r2, $r3)
{
	pause_link($other, $r1);
	pause_link($r1, $other);
}
pause_link($r3, $r2);
pause_link($r2, $r3);
sql($r2, "UPDATE payments SET tags = tags || 'from-r2'::text, touched = 'r2'");
sql($r3, "UPDATE payments SET tags = tags || 'from-r3'::text, touched = 'r3'");
resume_link($r3, $r2);
resume_link($r2, $r3);
ok(quiesce([ $r2, $r3 ]), 'r2 and r3 applied each other\'s writes');

for my $node ($r2, $r3)
{
	is(sql($node, q{SELECT string_agg(DISTINCT touched, ',') || ' ' || count(*) FROM payments}),
		"r3 $KEYS", $node->name . ': without the arbiter, each payment holds r3\'s newer write');
	is(sql($node, 'SELECT count(*) FROM cosmosrep.tentative_conflicts'), $KEYS,
		$node->name . ': each conflict waits as tentative');
	is(sql($node, "SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = 'payments'::regclass"),
		'0', $node->name . ': and none is recorded as resolved');
}

# r2 becomes the arbiter: it resolves what r1 never saw
sql($r2, q{SELECT cosmosrep.set_failover_priority('r2', 1)});
ok(poll_until($r3, 'SELECT cosmosrep.arbiter()', 'r2'), 'r3 names r2 the arbiter');
ok(poll_until($r2, 'SELECT count(*) FROM cosmosrep.tentative_conflicts', '0'),
	'r2 resolved its tentative conflicts on becoming the arbiter');
ok(poll_until($r3, 'SELECT count(*) FROM cosmosrep.tentative_conflicts', '0'),
	'r2\'s resolutions settled r3\'s tentative conflicts');
ok(quiesce([ $r2, $r3 ]), 'r3 applied r2\'s resolutions');
ok_same_everywhere([ $r2, $r3 ], 'payments', 'r2 and r3 hold the same payments');
is(sql($r3, q{SELECT count(*) FROM payments
               WHERE tags = '{created,from-r2,from-r3}' AND _cr_region = } . $id{r2}),
	$KEYS, 'every payment holds the resolver\'s union, written by the new arbiter r2');
is(sql($r2, q{SELECT count(*) || ' ' || string_agg(DISTINCT resolution, ',')
                 || ' ' || string_agg(DISTINCT resolved_by, ',')
                FROM cosmosrep.conflicts WHERE table_name = 'payments'::regclass}),
	"$KEYS merged r2", 'r2 records each conflict once, merged by itself');
is(sql($r3, "SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = 'payments'::regclass"),
	'0', 'r3 records none');

# r1 comes back: it believes it is the arbiter until the priority change
# reaches it, and may resolve a conflict of its own; the regions converge
for my $other ($r2, $r3)
{
	resume_link($other, $r1);
	resume_link($r1, $other);
}
ok(quiesce(\@all, 3), 'every region applied everything after r1 came back');
ok_same_everywhere(\@all, 'payments', 'the three regions hold the same payments');
is(sql($r1, q{SELECT count(*) FROM payments WHERE tags = '{created,from-r2,from-r3}'
                AND _cr_region = } . $id{r2}),
	$KEYS, 'every payment holds every tag, written last by the arbiter r2');
is(join(',', map { sql($_, 'SELECT count(*) FROM cosmosrep.tentative_conflicts') } @all),
	'0,0,0', 'no region holds a conflict that no arbiter resolved');
is(join(',', map { sql($_, 'SELECT cosmosrep.arbiter()') } @all), 'r2,r2,r2',
	'every region names r2 the arbiter');

$_->stop for @all;
done_testing();
