# Issue 23 under chaos: a resolver that is not commutative (ties keep
# existing) converges, because the arbiter resolves each conflict.
#
# Three regions a, b, c (a, the lowest id with no failover priority, is
# the arbiter) and a custom-policy status ledger: status only moves up
# (0..3), tags only grow, and the resolver keeps the higher status, on a
# tie existing, with the sorted union of both rows' tags; a delete keeps
# the other side.  pgbench in every region inserts, updates and deletes
# random keys, driven by a seeded PRNG, while replication links are
# paused and resumed at random; a non-arbiter region is killed with
# kill -9 and restarted mid-run, then the arbiter.  Once every link is
# resumed and every region has applied everything (fences), the regions
# must hold exactly the same rows, versions included, and every row must
# be reachable: its status, touched_by and each of its tags were written
# for that key by some region (a log that an AFTER trigger keeps in the
# writing transaction: ordinary triggers fire for local writes only).
# Conflicts are recorded in the arbiter only.
#
# A second table, journal, runs under the same load with a resolver that
# is neither commutative nor deterministic: it appends incoming's tags
# that existing lacks to existing's, in the order of arrival, and sets a
# note to random().  It too must end identical, every tag one that was
# written for its key.
#
# Then a change of arbiter during a partition: a, the arbiter, is cut off;
# b is given failover priority 1 on the other side, so b and c take b as
# the arbiter while a still takes itself; every region writes the same
# keys; b and c heal (b resolves), then a receives c's writes before b's
# (a, still the arbiter as far as it knows, resolves too), then
# everything heals.  Two regions may have resolved the same conflict; the
# regions must still end identical.
#
# The seed is printed; COSMOSREP_SEED=<seed> repeats a run's pauses,
# crashes and pgbench's seeds (not the timing).
use strict;
use warnings;

use CosmosRep::Converge;
use CosmosRep::Test;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $KEYS = 100;
my $LOAD_SECONDS = 20;
my $RATE = 60;    # transactions per second and region
my $TICK = 0.5;   # seconds between two link toggles

my $seed = ($ENV{COSMOSREP_SEED} // '') =~ /^(\d+)$/ ? $1 : int(rand(1000000));
srand($seed);
diag("seed $seed (COSMOSREP_SEED=$seed repeats the pauses, the crashes and pgbench's seeds)");

my @all = make_group(qw(a b c));
my %node = map { ($_->name => $_) } @all;
my @NAMES = qw(a b c);

sub sql
{
	my ($r, $query) = @_;
	return $node{$r}->safe_psql('postgres', $query);
}

create_fence(\@all);
for my $r (@NAMES)
{
	sql($r, sprintf(<<'SQL', $r));
CREATE TABLE ledger (id int PRIMARY KEY, status int NOT NULL, tags text[] NOT NULL,
                     touched_by text NOT NULL);
CREATE FUNCTION resolve_ledger(incoming ledger, existing ledger, is_tombstone boolean,
                               conflicting ledger[])
RETURNS ledger LANGUAGE plpgsql AS $$
DECLARE
    tags text[];
BEGIN
    IF incoming.id IS NULL THEN
        RETURN existing;
    ELSIF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    tags := ARRAY(SELECT DISTINCT t COLLATE "C"
                    FROM pg_catalog.unnest(existing.tags OPERATOR(pg_catalog.||) incoming.tags) t
                   ORDER BY 1);
    IF incoming.status > existing.status THEN
        incoming.tags := tags;
        RETURN incoming;
    END IF;
    existing.tags := tags;
    RETURN existing;
END
$$;
CREATE TABLE ledger_log (region text, id int, status int, tags text[], touched_by text);
CREATE FUNCTION log_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ledger_log VALUES (TG_ARGV[0], NEW.id, NEW.status, NEW.tags, NEW.touched_by);
    RETURN NULL;
END $$;
CREATE TRIGGER log_ledger AFTER INSERT OR UPDATE ON ledger
    FOR EACH ROW EXECUTE FUNCTION log_ledger('%s');

CREATE TABLE journal (id int PRIMARY KEY, tags text[] NOT NULL, note text NOT NULL);
CREATE FUNCTION resolve_journal(incoming journal, existing journal, is_tombstone boolean,
                                conflicting journal[])
RETURNS journal LANGUAGE plpgsql AS $$
BEGIN
    IF incoming.id IS NULL THEN
        RETURN existing;
    ELSIF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    existing.tags := existing.tags OPERATOR(pg_catalog.||)
        ARRAY(SELECT t FROM pg_catalog.unnest(incoming.tags) WITH ORDINALITY u(t, n)
               WHERE NOT t OPERATOR(pg_catalog.=) ANY (existing.tags) ORDER BY n);
    existing.note := pg_catalog.random()::text;
    RETURN existing;
END
$$;
CREATE TABLE journal_log (id int, tags text[]);
CREATE FUNCTION log_journal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.journal_log VALUES (NEW.id, NEW.tags);
    RETURN NULL;
END $$;
CREATE TRIGGER log_journal AFTER INSERT OR UPDATE ON journal
    FOR EACH ROW EXECUTE FUNCTION log_journal();
SQL
}
sql('a', q{SELECT cosmosrep.enable_table('ledger', policy => 'custom', resolver => 'public.resolve_ledger');
           SELECT cosmosrep.enable_table('journal', policy => 'custom', resolver => 'public.resolve_journal')});
for my $r (@NAMES)
{
	poll_until($node{$r}, q{SELECT count(*) FROM cosmosrep.tables WHERE policy = 'custom'}, '2')
	  or die "$r did not get ledger and journal";
}
is(query_or_error($node{a}, 'SELECT cosmosrep.arbiter()'), 'a',
	'a, the region of the lowest id with no failover priority, is the arbiter');

##########
# The load
##########

my $tmp = PostgreSQL::Test::Utils::tempdir();
my (%load, %load_out, %load_err);
my $load_round = 0;

sub start_load
{
	my ($r, $seconds) = @_;
	my $script = "$tmp/ledger_$r.sql";
	my $journal = "$tmp/journal_$r.sql";
	PostgreSQL::Test::Utils::append_to_file($journal, <<"SQL") unless -e $journal;
\\set id random(1, $KEYS)
\\set op random(1, 100)
\\set n random(1, 1000000000)
\\if :op <= 20
INSERT INTO journal VALUES (:id, ARRAY['$r' || :n], '$r') ON CONFLICT (id) DO NOTHING;
\\elif :op <= 90
UPDATE journal SET tags = tags || ('$r' || :n), note = '$r' WHERE id = :id;
\\else
DELETE FROM journal WHERE id = :id;
\\endif
SQL
	PostgreSQL::Test::Utils::append_to_file($script, <<"SQL") unless -e $script;
\\set id random(1, $KEYS)
\\set op random(1, 100)
\\set n random(1, 1000000000)
\\set up random(0, 2) / 2
\\if :op <= 20
INSERT INTO ledger VALUES (:id, :up, ARRAY['$r' || :n], '$r') ON CONFLICT (id) DO NOTHING;
\\elif :op <= 90
UPDATE ledger SET status = least(status + :up, 3), tags = ARRAY(SELECT DISTINCT t COLLATE "C" FROM unnest(tags || ('$r' || :n)) t ORDER BY 1), touched_by = '$r' WHERE id = :id;
\\else
DELETE FROM ledger WHERE id = :id;
\\endif
SQL
	my $pgseed = $seed * 10 + (++$load_round);
	($load_out{$r}, $load_err{$r}) = ('', '');
	$load{$r} = IPC::Run::start(
		[
			'pgbench', '-n', '-c', '2', '-j', '2', '-T', $seconds, '-R', $RATE,
			'--max-tries', '10', '-f', "$script\@2", '-f', "$journal\@1", "--random-seed=$pgseed",
			'-h', $node{$r}->host, '-p', $node{$r}->port, 'postgres'
		],
		'>', \$load_out{$r}, '2>', \$load_err{$r});
	return;
}

sub end_load
{
	my ($r, $killed) = @_;
	my $h = delete $load{$r};
	if ($killed)
	{
		$h->kill_kill;
		return;
	}
	$h->finish;
	my ($done) = $load_out{$r} =~ /number of transactions actually processed: (\d+)/;
	diag("  pgbench in $r: " . ($done // '?') . ' transactions');
	return;
}

##########
# Phase 1: chaos
##########

my @links;
for my $src (@NAMES)
{
	push @links, map { [ $src, $_ ] } grep { $_ ne $src } @NAMES;
}
my @victims = ((qw(b c))[ int(rand(2)) ], 'a');
my @crash_at = ($LOAD_SECONDS * (0.2 + 0.2 * rand()), $LOAD_SECONDS * (0.55 + 0.2 * rand()));
diag(sprintf('kill -9 of %s at about %.1f s, of the arbiter %s at about %.1f s',
		$victims[0], $crash_at[0], $victims[1], $crash_at[1]));

my $start = time;
start_load($_, $LOAD_SECONDS) for @NAMES;
my %paused;
my $crashes = 0;
while (time < $start + $LOAD_SECONDS - 1)
{
	my $tick = time;
	if ($crashes < 2 && $tick >= $start + $crash_at[$crashes])
	{
		my $victim = $victims[$crashes];
		crash_region($node{$victim});
		end_load($victim, 1);
		my $left = int($start + $LOAD_SECONDS - time);
		start_load($victim, $left) if $left >= 2;
		diag(sprintf('  killed and restarted %s at %.1f s', $victim, $tick - $start));
		$crashes++;
		next;
	}
	my ($src, $dst) = @{ $links[ int(rand(@links)) ] };
	my $fn = $paused{"$src>$dst"} ? 'resume_region' : 'pause_region';
	sql($dst, "SELECT cosmosrep.$fn('$src')");
	$paused{"$src>$dst"} = !$paused{"$src>$dst"};
	my $rest = $TICK - (time - $tick);
	select(undef, undef, undef, $rest) if $rest > 0;
}
is($crashes, 2, 'a non-arbiter region and then the arbiter were killed with kill -9 and restarted under load');
end_load($_, 0) for sort keys %load;

heal_regions(\@all);
ok(quiesce(\@all), 'every region applied every other region\'s writes after the heal');
ok_same_everywhere(\@all, 'ledger',
	'the ledger is identical in every region after the chaos, versions included');

# reachability: every row is a merge of writes that happened for its key
sub check_reachable
{
	my ($what) = @_;
	my (%status, %touched, %tags);
	for my $r (@NAMES)
	{
		for my $row (split /\n/, sql($r, q{SELECT id, status, touched_by, array_to_string(tags, ',')
		                                    FROM ledger_log}))
		{
			my ($id, $st, $by, $tags) = split /\|/, $row;
			$status{$id}{$st} = 1;
			$touched{$id}{$by} = 1;
			$tags{$id}{$_} = 1 for split /,/, $tags // '';
		}
	}
	for my $r (@NAMES)
	{
		my @bad;
		for my $row (split /\n/, sql($r, q{SELECT id, status, touched_by, array_to_string(tags, ',')
		                                    FROM ledger}))
		{
			my ($id, $st, $by, $tags) = split /\|/, $row;
			my @unknown = grep { !$tags{$id}{$_} } split /,/, $tags // '';
			push @bad, "$id: status $st" unless $status{$id}{$st};
			push @bad, "$id: touched_by $by" unless $touched{$id}{$by};
			push @bad, "$id: tags @unknown" if @unknown;
		}
		is(scalar(@bad), 0,
			"$what: $r: every row's status, touched_by and tags were written for its key by some region")
		  or diag('  ' . join("\n  ", @bad[ 0 .. ($#bad < 5 ? $#bad : 5) ]));
	}
}
check_reachable('after the chaos');

ok_same_everywhere(\@all, 'journal',
	'the journal (append in arrival order, random()) is identical in every region, versions included');
{
	my %written;
	for my $r (@NAMES)
	{
		for my $row (split /\n/, sql($r, q{SELECT id, array_to_string(tags, ',') FROM journal_log}))
		{
			my ($id, $tags) = split /\|/, $row;
			$written{$id}{$_} = 1 for split /,/, $tags // '';
		}
	}
	for my $r (@NAMES)
	{
		my @bad;
		for my $row (split /\n/, sql($r, q{SELECT id, array_to_string(tags, ',') FROM journal}))
		{
			my ($id, $tags) = split /\|/, $row;
			push @bad, "$id: $_" for grep { !$written{$id}{$_} } split /,/, $tags // '';
		}
		is(scalar(@bad), 0, "the journal in $r: every tag was written for its key by some region")
		  or diag('  ' . join("\n  ", @bad[ 0 .. ($#bad < 5 ? $#bad : 5) ]));
	}
	my %journal_conflicts = map {
		($_ => sql($_, q{SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = 'journal'::regclass}))
	} @NAMES;
	diag('journal conflicts recorded: ' . join(', ', map { "$_: $journal_conflicts{$_}" } @NAMES));
	cmp_ok($journal_conflicts{a}, '>', 0, 'the journal: the arbiter a resolved conflicts');
	is($journal_conflicts{$_}, '0', "the journal: $_, not the arbiter, records no conflict") for qw(b c);
}

my %conflicts = map {
	($_ => sql($_, q{SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = 'ledger'::regclass}))
} @NAMES;
diag('conflicts recorded: ' . join(', ', map { "$_: $conflicts{$_}" } @NAMES));
cmp_ok($conflicts{a}, '>', 0, 'the arbiter a resolved conflicts');
is($conflicts{$_}, '0', "$_, not the arbiter, records no conflict") for qw(b c);
for my $r (@NAMES)
{
	is(sql($r, q{SELECT count(*) FROM cosmosrep.conflicts WHERE resolution = 'error' OR kind = 'apply_error'}),
		'0', "$r: no resolver error and no rejected change");
}

##########
# Phase 2: a change of arbiter during a partition
##########

my $lo = 1001;
my $hi = 1040;
sql('a', "INSERT INTO ledger SELECT g, 0, '{}', 'a' FROM generate_series($lo, $hi) g");
for my $r (@NAMES)
{
	poll_until($node{$r}, "SELECT count(*) FROM ledger WHERE id BETWEEN $lo AND $hi", $hi - $lo + 1)
	  or die "$r did not get the keys of phase 2";
}
partition_regions(\@all);
sql('b', q{SELECT cosmosrep.set_failover_priority('b', 1)});

# every region writes every key: random status steps, a tag of its own
for my $r (@NAMES)
{
	my $up = int(rand(3));
	sql($r, "UPDATE ledger SET status = least(status + (random() * $up)::int, 3),"
		  . " tags = ARRAY(SELECT DISTINCT t COLLATE \"C\" FROM unnest(tags || ('p2-$r-' || id)) t ORDER BY 1),"
		  . " touched_by = '$r' WHERE id BETWEEN $lo AND $hi");
}

# b and c heal: b is their arbiter now
for my $pair ([qw(b c)], [qw(c b)])
{
	sql($pair->[0], "SELECT cosmosrep.resume_region('$pair->[1]')");
}
ok(quiesce([ @node{qw(b c)} ]), 'phase 2: b and c applied each other\'s writes');
for my $r (qw(b c))
{
	is(query_or_error($node{$r}, 'SELECT cosmosrep.arbiter()'), 'b',
		"phase 2: $r, on b's side of the partition, takes b (failover priority 1) as the arbiter");
}
is(query_or_error($node{a}, 'SELECT cosmosrep.arbiter()'), 'a',
	'phase 2: a, cut off, still takes itself as the arbiter');

# a receives c's writes before b's
sql('a', q{SELECT cosmosrep.resume_region('c')});
poll_until($node{a}, "SELECT count(*) FROM ledger WHERE id BETWEEN $lo AND $hi"
	  . " AND tags @> ARRAY['p2-c-' || id]", $hi - $lo + 1)
  or diag('a did not apply c\'s writes of phase 2');
heal_regions(\@all);
ok(quiesce(\@all), 'phase 2: every region applied every other region\'s writes after the heal');
ok_same_everywhere(\@all, 'ledger',
	'phase 2: the ledger is identical in every region after two arbiters resolved, versions included');
for my $r (@NAMES)
{
	ok(poll_until($node{$r}, 'SELECT cosmosrep.arbiter()', 'b', 30),
		"phase 2: $r takes b as the arbiter once healed");
}
check_reachable('after the change of arbiter');
is(sql('a', "SELECT count(*) FROM ledger WHERE id BETWEEN $lo AND $hi"
		  . " AND tags @> ARRAY['p2-a-' || id, 'p2-b-' || id, 'p2-c-' || id]"), $hi - $lo + 1,
	'phase 2: every key holds the tags written on both sides of the partition');
diag('phase 2 conflicts recorded: ' . join(', ', map {
	"$_: " . sql($_, "SELECT count(*) FROM cosmosrep.conflicts WHERE (key->>'id')::int BETWEEN $lo AND $hi")
} @NAMES));

$_->stop for @all;
done_testing();
