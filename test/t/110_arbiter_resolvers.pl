# Issue 23: any resolver converges, because one region (the arbiter)
# resolves each conflict of a custom-policy table, once, and its result is
# a new write of its own that replicates like any other.
#
# The arbiter is the first region, among those that accept writes, in
# failover priority order (1, 2, ... first, 0 last, ties by region id);
# cosmosrep.arbiter() names it.  Regions that are not the arbiter apply
# conflicting writes by version (tentatively) until the arbiter's write
# arrives; the conflict is recorded in the arbiter only.
#
#   A  the issue's payments scenario, exactly: three regions, a resolver
#      written the way Cosmos DB's examples are (the higher status wins,
#      an equal status keeps existing, tags united in sorted order); r2
#      stops applying r3; r3 updates 50 payments; r1 updates them after it
#      has received r3's writes; r2 thus receives r1's writes before r3's.
#      r1's writes had seen r3's: not a conflict.  Every region ends with
#      r1's writes, at r1's versions, and no region records a conflict.
#   B  the same with a concurrent write: r2, cut off, updates the same
#      payments too (a real conflict), with r3 made the arbiter by its
#      failover priority.  Every region ends identical, every row a write
#      of the arbiter (its region id, a version above both conflicting
#      writes) holding the resolver's merge, and the conflicts are
#      recorded in the arbiter only, one per payment.
#   C  resolvers that are neither commutative nor deterministic: one that
#      appends incoming's tags to existing's in the order of arrival, one
#      that reads random(); all three regions update the same keys while
#      partitioned, then heal: identical everywhere, conflicts in the
#      arbiter only.
#   E  while the arbiter is unreachable, r1 and r2 write the same payments:
#      they hold the newer write, tentatively, and record nothing; once
#      the arbiter is back it resolves each conflict, once.
#   D  how the arbiter moves: failover priorities, a single write region,
#      remove_region.
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

sub sql
{
	my ($node, $query) = @_;
	return $node->safe_psql('postgres', $query);
}

create_fence(\@all);

my $SCHEMA = <<'SQL';
CREATE TABLE payments (id int PRIMARY KEY, status text NOT NULL, amount numeric NOT NULL,
                       tags text[] NOT NULL, last_touched_by text NOT NULL);

-- as Cosmos DB's documented resolvers are written: the higher status
-- wins, an equal status keeps existing, the tags are united in sorted
-- order; a delete keeps the other side
CREATE FUNCTION resolve_payment(incoming payments, existing payments,
                                is_tombstone boolean, conflicting payments[])
RETURNS payments LANGUAGE plpgsql AS $$
DECLARE
    states CONSTANT text[] := '{pending,authorized,captured,refunded}';
    tags text[];
BEGIN
    RAISE LOG 'resolver called: payment %', coalesce(incoming.id, existing.id);
    IF incoming.id IS NULL THEN
        RETURN existing;
    ELSIF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    tags := ARRAY(SELECT DISTINCT t COLLATE "C"
                    FROM pg_catalog.unnest(existing.tags OPERATOR(pg_catalog.||) incoming.tags) t
                   ORDER BY 1);
    IF pg_catalog.array_position(states, incoming.status)
       > pg_catalog.array_position(states, existing.status) THEN
        incoming.tags := tags;
        RETURN incoming;
    END IF;
    existing.tags := tags;
    RETURN existing;
END
$$;

-- appends incoming's tags to existing's, in the order of arrival
CREATE TABLE notes_append (id int PRIMARY KEY, tags text[] NOT NULL, val text NOT NULL);
CREATE FUNCTION resolve_append(incoming notes_append, existing notes_append,
                               is_tombstone boolean, conflicting notes_append[])
RETURNS notes_append LANGUAGE plpgsql AS $$
BEGIN
    RAISE LOG 'resolver called: notes_append %', coalesce(incoming.id, existing.id);
    IF incoming.id IS NULL THEN
        RETURN existing;
    ELSIF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    existing.tags := existing.tags OPERATOR(pg_catalog.||) incoming.tags;
    existing.val := existing.val OPERATOR(pg_catalog.||) '+' OPERATOR(pg_catalog.||) incoming.val;
    RETURN existing;
END
$$;

-- keeps one side at random, with a random number in it
CREATE TABLE notes_random (id int PRIMARY KEY, tags text[] NOT NULL, val text NOT NULL);
CREATE FUNCTION resolve_random(incoming notes_random, existing notes_random,
                               is_tombstone boolean, conflicting notes_random[])
RETURNS notes_random LANGUAGE plpgsql AS $$
DECLARE
    kept public.notes_random;
BEGIN
    RAISE LOG 'resolver called: notes_random %', coalesce(incoming.id, existing.id);
    IF incoming.id IS NULL OR existing.id IS NULL THEN
        RETURN coalesce(incoming, existing);
    END IF;
    IF pg_catalog.random() < 0.5 THEN
        kept := incoming;
    ELSE
        kept := existing;
    END IF;
    kept.val := kept.val OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) pg_catalog.random()::text;
    RETURN kept;
END
$$;
SQL

sql($_, $SCHEMA) for @all;
sql($r1, q{
	SELECT cosmosrep.enable_table('payments', policy => 'custom', resolver => 'public.resolve_payment');
	SELECT cosmosrep.enable_table('notes_append', policy => 'custom', resolver => 'public.resolve_append');
	SELECT cosmosrep.enable_table('notes_random', policy => 'custom', resolver => 'public.resolve_random');
});
for my $node (@all)
{
	poll_until($node, q{SELECT count(*) FROM cosmosrep.tables WHERE policy = 'custom'}, '3')
	  or die $node->name . ' did not get the custom policies';
}

# The resolvers log each call (RAISE LOG, which a rolled-back
# subtransaction does not take back): calls_since($node, $offset, $what)
# counts the calls logged in $node's server log past byte $offset whose
# message starts with $what; log_offsets() is where each log ends now.
sub log_offsets
{
	return { map { ($_->name => -s $_->logfile) } grep { -e $_->logfile } @all };
}

sub calls_since
{
	my ($node, $offsets, $what) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offsets->{ $node->name });
	my @calls = $log =~ /LOG:  resolver called: \Q$what\E \d+/g;
	return scalar(@calls);
}

# the conflicts of a table (and key range) recorded in each region
sub conflicts
{
	my ($node, $table, $where) = @_;
	return sql($node, "SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = '$table'::regclass"
		  . ($where ? " AND $where" : ''));
}

##########
# A. The issue's scenario: a causal pair that reaches r2 out of order
##########

is(query_or_error($r1, 'SELECT cosmosrep.arbiter()'), 'r1',
	'with no failover priorities, the arbiter is the region of the lowest id (r1)');

sql($r1, q{INSERT INTO payments SELECT g, 'authorized', g * 10, '{}', 'r1'
           FROM generate_series(1, 50) g});
for my $node (@all)
{
	poll_until($node, 'SELECT count(*) FROM payments WHERE id <= 50', '50')
	  or die $node->name . ' did not get the payments';
}

my $offsets = log_offsets();
pause_link($r2, $r3);
sql($r3, q{UPDATE payments SET tags = tags || 'z-r3'::text, last_touched_by = 'r3' WHERE id <= 50});
ok(poll_until($r1, q{SELECT count(*) FROM payments WHERE id <= 50 AND last_touched_by = 'r3'}, '50'),
	'A: r1 receives r3\'s updates of the 50 payments');
my %r1_version = split /[|\n]/, sql($r1, q{
	WITH u AS (UPDATE payments SET tags = tags || 'a-r1'::text, last_touched_by = 'r1'
	            WHERE id <= 50 RETURNING id, _cr_version)
	SELECT id, _cr_version FROM u});
ok(poll_until($r2, q{SELECT count(*) FROM payments WHERE id <= 50 AND last_touched_by = 'r1'
                      AND tags = '{z-r3,a-r1}'}, '50'),
	'A: r2 holds r1\'s updates while r3\'s have not reached it');
resume_link($r2, $r3);
ok(quiesce(\@all), 'A: every region applied every other region\'s writes after the resume');

ok_same_everywhere(\@all, 'payments',
	'A: the payments are identical in every region, versions included');
for my $node (@all)
{
	my @wrong = grep {
		my ($pid, $rest) = split /\|/, $_, 2;
		$rest ne "{z-r3,a-r1}|r1|$r1_version{$pid}"
	} split /\n/, sql($node, 'SELECT id, tags, last_touched_by, _cr_version FROM payments WHERE id <= 50');
	is(scalar(@wrong), 0,
		'A: ' . $node->name . ': every payment holds r1\'s update (it had seen r3\'s), at r1\'s version')
	  or diag('  first ones: ' . join(' ', @wrong[ 0 .. ($#wrong < 3 ? $#wrong : 3) ]));
	is(conflicts($node, 'payments'), '0',
		'A: ' . $node->name . ' records no conflict: an update made after seeing another is not concurrent with it');
	is(calls_since($node, $offsets, 'payment'), 0, 'A: ' . $node->name . ' never calls the resolver');
}

##########
# B. A real conflict, resolved by the arbiter r3
##########

sql($r1, q{SELECT cosmosrep.set_failover_priority('r3', 1)});
for my $node (@all)
{
	poll_until($node, q{SELECT failover_priority FROM cosmosrep.regions WHERE region_name = 'r3'}, '1')
	  or die $node->name . ' did not get r3\'s priority';
	is(query_or_error($node, 'SELECT cosmosrep.arbiter()'), 'r3',
		'B: ' . $node->name . ': with failover priority 1, r3 is the arbiter');
}

sql($r1, q{INSERT INTO payments SELECT g, 'authorized', g * 10, '{}', 'r1'
           FROM generate_series(101, 150) g});
for my $node (@all)
{
	poll_until($node, 'SELECT count(*) FROM payments WHERE id > 100', '50')
	  or die $node->name . ' did not get the payments';
}
$offsets = log_offsets();
pause_link($r1, $r2);
pause_link($r3, $r2);
pause_link($r2, $r1);
pause_link($r2, $r3);

sql($r3, q{UPDATE payments SET tags = tags || 'z-r3'::text, last_touched_by = 'r3' WHERE id > 100});
poll_until($r1, q{SELECT count(*) FROM payments WHERE id > 100 AND last_touched_by = 'r3'}, '50')
  or die 'r1 did not receive r3\'s updates';
my %w_version = split /[|\n]/, sql($r1, q{
	WITH u AS (UPDATE payments SET tags = tags || 'a-r1'::text, last_touched_by = 'r1'
	            WHERE id > 100 RETURNING id, _cr_version)
	SELECT id, _cr_version FROM u});
poll_until($r3, q{SELECT count(*) FROM payments WHERE id > 100 AND last_touched_by = 'r1'}, '50')
  or die 'r3 did not receive r1\'s updates';
# r2, cut off: the even payments are captured (a higher status), the odd
# ones only tagged (an equal status)
my %z_version = split /[|\n]/, sql($r2, q{
	WITH u AS (UPDATE payments
	              SET status = CASE WHEN id % 2 = 0 THEN 'captured' ELSE status END,
	                  tags = tags || 'm-r2'::text, last_touched_by = 'r2'
	            WHERE id > 100 RETURNING id, _cr_version)
	SELECT id, _cr_version FROM u});

resume_link($r1, $r2);
resume_link($r3, $r2);
resume_link($r2, $r1);
resume_link($r2, $r3);
ok(quiesce(\@all), 'B: every region applied every other region\'s writes after the heal');
ok_same_everywhere(\@all, 'payments',
	'B: the payments are identical in every region, versions included');

for my $node (@all)
{
	my $name = $node->name;
	my (@not_arbiter, @not_newer, @not_merge);
	for my $row (split /\n/, sql($node, q{SELECT id, status, tags, last_touched_by, _cr_region,
	                                          _cr_version FROM payments WHERE id > 100}))
	{
		my ($pid, $status, $tags, $by, $region, $version) = split /\|/, $row;
		push @not_arbiter, $pid if $region ne $id{r3};
		push @not_newer, $pid
		  if $version <= $w_version{$pid} || $version <= $z_version{$pid};
		my $want_status = $pid % 2 == 0 ? 'captured' : 'authorized';
		push @not_merge, "$pid:$status,$tags,$by"
		  unless $status eq $want_status
		  && $tags eq '{a-r1,m-r2,z-r3}'
		  && ($pid % 2 == 0 ? $by eq 'r2' : $by =~ /^r[12]$/);
	}
	is(scalar(@not_arbiter), 0,
		"B: $name: every resolved payment was written by the arbiter (_cr_region $id{r3})")
	  or diag("  first ones: @not_arbiter[0 .. ($#not_arbiter < 3 ? $#not_arbiter : 3)]");
	is(scalar(@not_newer), 0,
		"B: $name: every resolved payment carries a version above both conflicting writes");
	is(scalar(@not_merge), 0,
		"B: $name: every payment holds the resolver's merge: the higher status, the sorted union of the tags")
	  or diag("  first ones: @not_merge[0 .. ($#not_merge < 3 ? $#not_merge : 3)]");
}
is(conflicts($r3, 'payments', q{(key->>'id')::int > 100}), '50',
	'B: the arbiter r3 records each conflict once: one per payment');
is(conflicts($_, 'payments', q{(key->>'id')::int > 100}), '0',
	'B: ' . $_->name . ', not the arbiter, records none of the conflicts')
  for ($r1, $r2);
is(calls_since($r3, $offsets, 'payment'), 50,
	'B: the arbiter r3 calls the resolver once per conflict (50 calls)');
is(calls_since($_, $offsets, 'payment'), 0, 'B: ' . $_->name . ', not the arbiter, never calls the resolver')
  for ($r1, $r2);

##########
# C. Resolvers neither commutative nor deterministic
##########

for my $table (qw(notes_append notes_random))
{
	sql($r1, "INSERT INTO $table SELECT g, '{}', 'start' FROM generate_series(1, 30) g");
	for my $node (@all)
	{
		poll_until($node, "SELECT count(*) FROM $table", '30')
		  or die $node->name . " did not get $table";
	}
	my $offsets = log_offsets();
	partition_regions(\@all);
	for my $node (@all)
	{
		my $name = $node->name;
		sql($node, "UPDATE $table SET tags = tags || '$name'::text, val = '$name'");
	}
	# and once more in r1, after the first round of writes everywhere
	sql($r1, "UPDATE $table SET tags = tags || 'r1-again'::text WHERE id % 3 = 0");
	heal_regions(\@all);
	ok(quiesce(\@all), "C: $table: every region applied every other region's writes after the heal");
	ok_same_everywhere(\@all, $table,
		"C: $table: three regions' concurrent updates end identical everywhere, versions included");
	is(sql($r1, "SELECT count(*) FROM $table WHERE _cr_region <> $id{r3}"), '0',
		"C: $table: every key holds a write of the arbiter r3");
	cmp_ok(conflicts($r3, $table), '>=', 30, "C: $table: the arbiter r3 records the conflicts");
	is(conflicts($_, $table), '0', "C: $table: " . $_->name . ', not the arbiter, records none')
	  for ($r1, $r2);
	is(calls_since($r3, $offsets, $table), conflicts($r3, $table),
		"C: $table: the arbiter r3 calls the resolver once per conflict it records");
	is(calls_since($_, $offsets, $table), 0, "C: $table: " . $_->name . ', not the arbiter, never calls the resolver')
	  for ($r1, $r2);
}
# every tag of the append resolver's rows was written by some region
is(sql($r1, q{SELECT count(*) FROM notes_append, unnest(tags) t
               WHERE t NOT IN ('r1', 'r2', 'r3', 'r1-again')}), '0',
	'C: notes_append: every tag of the merged rows is one a region wrote');

##########
# E. While the arbiter is unreachable, conflicts stay tentative
##########

sql($r1, q{INSERT INTO payments SELECT g, 'authorized', g, '{}', 'r1' FROM generate_series(201, 210) g});
for my $node (@all)
{
	poll_until($node, 'SELECT count(*) FROM payments WHERE id BETWEEN 201 AND 210', '10')
	  or die $node->name . ' did not get the payments of E';
}
partition_regions(\@all);
my %e1 = split /[|\n]/, sql($r1, q{
	WITH u AS (UPDATE payments SET tags = tags || 'e-r1'::text, last_touched_by = 'r1'
	            WHERE id BETWEEN 201 AND 210 RETURNING id, _cr_version)
	SELECT id, _cr_version FROM u});
my %e2 = split /[|\n]/, sql($r2, q{
	WITH u AS (UPDATE payments SET status = 'captured', tags = tags || 'e-r2'::text, last_touched_by = 'r2'
	            WHERE id BETWEEN 201 AND 210 RETURNING id, _cr_version)
	SELECT id, _cr_version FROM u});
resume_link($r1, $r2);
resume_link($r2, $r1);
ok(quiesce([ $r1, $r2 ]), 'E: r1 and r2 applied each other\'s writes while the arbiter r3 is cut off');
my $tentative = join(' ', map {
	my $id = $_;
	$e1{$id} > $e2{$id} ? "$id:r1\@$e1{$id}" : "$id:r2\@$e2{$id}"
} 201 .. 210);
for my $node ($r1, $r2)
{
	is(sql($node, q{SELECT string_agg(id || ':' || last_touched_by || '@' || _cr_version, ' ' ORDER BY id)
	                  FROM payments WHERE id BETWEEN 201 AND 210}),
		$tentative,
		'E: ' . $node->name . ' holds the newer of the two conflicting writes, tentatively, while the arbiter is unreachable');
	is(conflicts($node, 'payments', q{(key->>'id')::int BETWEEN 201 AND 210}), '0',
		'E: ' . $node->name . ', not the arbiter, records none of the conflicts');
}
heal_regions(\@all);
ok(quiesce(\@all), 'E: every region applied every other region\'s writes once the arbiter is back');
ok_same_everywhere(\@all, 'payments', 'E: the payments are identical in every region once the arbiter is back');
is(sql($r1, q{SELECT string_agg(DISTINCT _cr_region || ' ' || status || ' ' || tags::text, ', ')
                FROM payments WHERE id BETWEEN 201 AND 210}),
	"$id{r3} captured {e-r1,e-r2}",
	'E: once back, the arbiter r3 resolved every conflict: its write, the higher status, the union of the tags');
is(conflicts($r3, 'payments', q{(key->>'id')::int BETWEEN 201 AND 210}), '10',
	'E: the arbiter r3 records each conflict once, after it is back');

##########
# D. How the arbiter moves
##########

sub arbiter_everywhere
{
	my ($nodes, $want, $what) = @_;
	for my $node (@$nodes)
	{
		ok(poll_until($node, 'SELECT cosmosrep.arbiter()', $want, 30),
			$node->name . ": $what")
		  or diag("  arbiter(): $CosmosRep::Converge::last_value");
	}
}

sql($r1, q{SELECT cosmosrep.set_failover_priority('r2', 2)});
arbiter_everywhere(\@all, 'r3', 'D: r3 (priority 1) stays the arbiter when r2 gets priority 2');
sql($r2, q{SELECT cosmosrep.set_multiple_write_regions(false, 'r1')});
arbiter_everywhere(\@all, 'r1', 'D: with r1 the only write region, r1 is the arbiter');
sql($r2, q{SELECT cosmosrep.set_multiple_write_regions(true)});
arbiter_everywhere(\@all, 'r3', 'D: with every region writing again, r3 (priority 1) is the arbiter again');
my ($ret, $out, $err) = $r1->psql('postgres',
	"SET statement_timeout = '30s'; SELECT cosmosrep.remove_region('r3')");
is($ret, 0, 'D: remove_region removes the arbiter r3') or diag($err);
$r3->stop;
arbiter_everywhere([ $r1, $r2 ], 'r2',
	'D: once the arbiter r3 is removed, r2 (priority 2) is the arbiter');

# a conflict after the move (a payment that had none) is resolved by the
# new arbiter
sql($r1, q{INSERT INTO payments VALUES (1000, 'authorized', 1, '{}', 'r1')});
poll_until($r2, 'SELECT count(*) FROM payments WHERE id = 1000', '1')
  or die 'r2 did not get payment 1000';
pause_link($r1, $r2);
pause_link($r2, $r1);
sql($r1, q{UPDATE payments SET tags = tags || 'x-r1'::text, last_touched_by = 'r1' WHERE id = 1000});
sql($r2, q{UPDATE payments SET tags = tags || 'x-r2'::text, last_touched_by = 'r2' WHERE id = 1000});
resume_link($r1, $r2);
resume_link($r2, $r1);
ok(quiesce([ $r1, $r2 ]), 'D: r1 and r2 applied each other\'s writes');
ok_same_everywhere([ $r1, $r2 ], 'payments', 'D: the payments are identical in r1 and r2');
is(sql($r1, 'SELECT _cr_region || tags::text FROM payments WHERE id = 1000'), "$id{r2}\{x-r1,x-r2}",
	'D: the conflict after the move is resolved by the new arbiter r2, with the resolver\'s union of the tags');
is(conflicts($r2, 'payments', q{(key->>'id')::int = 1000}), '1',
	'D: the new arbiter r2 records the conflict');
is(conflicts($r1, 'payments', q{(key->>'id')::int = 1000}), '0', 'D: r1 records none');

$_->stop for ($r1, $r2);
done_testing();
