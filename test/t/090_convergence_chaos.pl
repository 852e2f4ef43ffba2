# Convergence under chaos: three regions write, update and delete the same
# 200 keys at once (pgbench in every region) for 20 s, while replication
# links between them are paused and resumed at random and one region is
# killed with kill -9 and restarted.  Once every link is resumed and every
# region has applied every other's writes, each region holds exactly the
# state that last-writer-wins on the row version prescribes: for every key,
# the write or delete with the highest version among all writes and deletes
# made in any region.
#
# The oracle comes from the regions themselves, independently of what
# replication did: every local insert or update is logged, with its version
# and value, in a local table written in the same transaction (so a write
# is logged if and only if it committed), and every delete leaves a
# tombstone with its version (cosmosrep.tombstones).
#
# The chaos is random; the seed is printed and CHAOS_SEED repeats a run.
use strict;
use warnings;

use CosmosRep::Test;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $KEYS = 200;
my $LOAD_SECONDS = 20;
my $RATE = 150;    # transactions per second and region

my $seed = ($ENV{CHAOS_SEED} // '') =~ /^(\d+)$/ ? $1 : int(rand(1000000));
srand($seed);
diag("chaos seed $seed (CHAOS_SEED=$seed repeats the pauses and the crash)");

my ($ra, $rb, $rc) = make_group(qw(a b c));
my @all = ($ra, $rb, $rc);
my %node = map { ($_->name => $_) } @all;
my %region_of = split /[|\n]/,
  $ra->safe_psql('postgres', 'SELECT region_id, region_name FROM cosmosrep.regions');

# a version, with the region that wrote it (its low 8 bits)
sub v
{
	my ($version) = @_;
	return "$version (" . ($region_of{ $version & 255 } // '?') . ')';
}

##########
# kv is multi-region; fence is multi-region too and marks, after the load,
# that a region has applied everything another region wrote before it
##########

for my $node (@all)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE kv (id int PRIMARY KEY, val text);
		CREATE TABLE fence (region text PRIMARY KEY);
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('kv');
	SELECT cosmosrep.enable_table('fence');
});
for my $node ($rb, $rc)
{
	$node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM cosmosrep.tables WHERE table_name::text IN ('kv', 'fence')")
	  or die 'enabling kv and fence did not reach ' . $node->name;
}

# The write log of each region: local, not multi-region.  The AFTER trigger
# is an ordinary one (ENABLE ORIGIN), so it fires for the writes of local
# sessions and never in the apply worker; it runs in the writing
# transaction, so the log holds exactly the committed local writes, with
# the version cosmosrep's row trigger stamped.  Deletes are logged too, to
# count them; their versions come from the tombstones.
for my $node (@all)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE wlog (region text, id int, version bigint, op text, val text);
		CREATE FUNCTION wlog_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF TG_OP = 'DELETE' THEN
				INSERT INTO public.wlog VALUES (TG_ARGV[0], OLD.id, NULL, 'd', NULL);
			ELSE
				INSERT INTO public.wlog VALUES (TG_ARGV[0], NEW.id, NEW._cr_version, 'w', NEW.val);
			END IF;
			RETURN NULL;
		END $$;
	} . sprintf(q{
		CREATE TRIGGER wlog AFTER INSERT OR UPDATE OR DELETE ON kv
			FOR EACH ROW EXECUTE FUNCTION wlog_write('%s');
	}, $node->name));
}

##########
# The load: 2 clients per region, each transaction one statement on a
# random key: upsert 40%, update 40%, delete 20%.  pgbench retries
# deadlocks and serialization failures.
##########

my $tmp = PostgreSQL::Test::Utils::tempdir();
my (%load, %load_err, %load_out);

sub start_load
{
	my ($node, $seconds) = @_;
	my $name = $node->name;
	my $script = "$tmp/load_$name.sql";

	PostgreSQL::Test::Utils::append_to_file($script, <<"SQL") unless -e $script;
\\set id random(1, $KEYS)
\\set op random(1, 100)
\\set n random(1, 1000000000)
\\if :op <= 40
INSERT INTO kv (id, val) VALUES (:id, '$name-' || :n) ON CONFLICT (id) DO UPDATE SET val = excluded.val;
\\elif :op <= 80
UPDATE kv SET val = '$name-' || :n WHERE id = :id;
\\else
DELETE FROM kv WHERE id = :id;
\\endif
SQL
	($load_out{$name}, $load_err{$name}) = ('', '');
	$load{$name} = IPC::Run::start(
		[
			'pgbench', '-n', '-c', '2', '-j', '2', '-T', $seconds,
			'-R', $RATE, '--max-tries', '10', '-f', $script,
			'-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', \$load_out{$name}, '2>', \$load_err{$name});
	return;
}

# wait for a region's pgbench to end by itself (-T), or kill the one whose
# region was killed
sub end_load
{
	my ($name, $killed) = @_;
	my $h = delete $load{$name};
	if ($killed)
	{
		$h->kill_kill;
		diag("pgbench in $name ended with its region");
		return;
	}
	$h->finish;
	my ($done) = $load_out{$name} =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $load_out{$name} =~ /number of failed transactions: (\d+)/;
	diag(sprintf('pgbench in %s: %s transactions, %s failed%s', $name,
			$done // '?', $failed // '?',
			$load_err{$name} =~ /\S/ ? '; stderr: ' . substr($load_err{$name}, 0, 400) : ''));
	return;
}

##########
# Chaos: about once a second pause or resume a random directed link
# (pause_region(source) run in the receiving region); once, halfway,
# kill -9 a region and restart it, and its load with it.
##########

my @links;
for my $src (@all)
{
	push @links, map { [ $src->name, $_->name ] } grep { $_ != $src } @all;
}
my %paused;
my ($pauses, $resumes) = (0, 0);
my $crashed = $all[ int(rand(@all)) ];

my $start = time;
start_load($_, $LOAD_SECONDS) for @all;
my $crash_done = 0;
while (time < $start + $LOAD_SECONDS - 1)
{
	my $tick = time;
	if (!$crash_done && $tick >= $start + $LOAD_SECONDS / 2)
	{
		crash_region($crashed);
		end_load($crashed->name, 1);    # its clients died with it
		my $left = int($start + $LOAD_SECONDS - time);
		start_load($crashed, $left) if $left >= 2;
		$crash_done = 1;
		diag(sprintf('crashed and restarted %s at %.1f s', $crashed->name, $tick - $start));
		next;
	}
	my ($src, $dst) = @{ $links[ int(rand(@links)) ] };
	my $fn = $paused{"$src>$dst"} ? 'resume_region' : 'pause_region';
	$node{$dst}->safe_psql('postgres', "SELECT cosmosrep.$fn('$src')");
	$paused{"$src>$dst"} = !$paused{"$src>$dst"};
	$paused{"$src>$dst"} ? $pauses++ : $resumes++;
	my $rest = 1 - (time - $tick);
	select(undef, undef, undef, $rest) if $rest > 0;
}
ok($crash_done, 'one region was killed and restarted under load');
end_load($_, 0) for sort keys %load;
diag("links paused $pauses times and resumed $resumes times during the load");

##########
# Heal: resume every link in every region, then write a fence row in each
# region.  Apply is in commit order, so once a region holds the fence row
# of another, it has applied every write that region made before.
##########

for my $node (@all)
{
	for my $other (grep { $_ != $node } @all)
	{
		$node->safe_psql('postgres', sprintf("SELECT cosmosrep.resume_region('%s')", $other->name));
	}
}
$_->safe_psql('postgres', sprintf("INSERT INTO fence VALUES ('%s')", $_->name)) for @all;
for my $node (@all)
{
	ok($node->poll_query_until('postgres', 'SELECT count(*) = 3 FROM fence'),
		$node->name . ' applies every region\'s writes once all links are resumed');
}
my $healed_at = $ra->safe_psql('postgres', 'SELECT now()');

my %sum = map { ($_->name => table_checksum($_, 'kv')) } @all;
is(scalar(keys %{ { reverse %sum } }), 1,
	'kv is identical in every region once each has applied all the others\' writes')
  or diag(join("\n", map { "$_: $sum{$_}" } sort keys %sum));

for my $node (@all)
{
	ok($node->poll_query_until('postgres', qq{
			SELECT bool_and(state = 'streaming'
			                AND (last_error IS NULL OR last_error_at < '$healed_at'))
			  FROM cosmosrep.replication_status}),
		$node->name . ' streams from every region after the chaos, with no error since the heal')
	  or diag($node->safe_psql('postgres',
			'SELECT source_region, state, last_error, last_error_at FROM cosmosrep.replication_status'));
	my $kept = $node->safe_psql('postgres', q{
		SELECT string_agg(source_region || ': ' || last_error || ' at ' || last_error_at, '; ')
		  FROM cosmosrep.replication_status WHERE last_error IS NOT NULL});
	diag($node->name . " keeps the last error of a link from during the chaos: $kept") if $kept ne '';
}

##########
# The oracle: per key, the write or delete with the highest version among
# the writes logged in every region and the tombstones of every region.
##########

my (%best, %history, %written, %tomb, @bad);
my ($writes, $deletes, $tombstones) = (0, 0, 0);

sub consider
{
	my ($id, $version, $what) = @_;
	push @{ $history{$id} }, [ $version, $what ];
	$best{$id} = { version => $version, what => $what }
	  if !$best{$id} || $version > $best{$id}{version};
	return;
}

for my $node (@all)
{
	for my $row (split /\n/, $node->safe_psql('postgres',
			"SELECT region, id, version, val FROM wlog WHERE op = 'w'"))
	{
		my ($region, $id, $version, $val) = split /\|/, $row, 4;
		push @bad, "version $version logged twice" if $written{$version}++;
		push @bad, "write $id $val logged in $region has the version " . v($version)
		  if ($region_of{ $version & 255 } // '') ne $region;
		consider($id, $version, "write $val");
		$writes++;
	}
	$deletes += $node->safe_psql('postgres', "SELECT count(*) FROM wlog WHERE op = 'd'");
	for my $row (split /\n/, $node->safe_psql('postgres', q{
			SELECT key, max(version) FROM cosmosrep.tombstones
			 WHERE table_name = 'kv'::regclass GROUP BY key}))
	{
		my ($key, $version) = split /\|/, $row;
		my ($id) = $key =~ /^\((\d+)\)$/ or die "unexpected tombstone key $key";
		$tomb{$id}{$version} = 1;    # the same delete is remembered in many regions
		$tombstones++;
	}
}
for my $id (keys %tomb)
{
	for my $version (keys %{ $tomb{$id} })
	{
		push @bad, "delete of $id and a write share the version $version" if $written{$version};
		consider($id, $version, 'delete');
	}
}
diag("$writes writes and $deletes deletes committed; $tombstones tombstone rows in the three regions; "
	  . scalar(grep { $best{$_}{what} eq 'delete' } keys %best)
	  . " keys end deleted, " . scalar(grep { $best{$_}{what} ne 'delete' } keys %best)
	  . " end written");
cmp_ok($writes, '>=', 500, 'the load committed hundreds of writes');
cmp_ok($deletes, '>=', 50, 'the load committed deletes');
is(join("\n", @bad), '',
	'every local write is logged once, with a version of its own region, and no write shares a version with a delete');

# what the oracle expects of a key: its version and value, or absent
sub expected
{
	my ($id) = @_;
	my $best = $best{$id};
	return 'absent' if !$best || $best->{what} eq 'delete';
	(my $val = $best->{what}) =~ s/^write //;
	return "$best->{version}|$val";
}
my $surviving = grep { expected($_) ne 'absent' } 1 .. $KEYS;

for my $node (@all)
{
	my %got = map { my ($id, $rest) = split /\|/, $_, 2; ($id => $rest) }
	  split /\n/, $node->safe_psql('postgres', 'SELECT id, _cr_version, val, _cr_base FROM kv');
	is(scalar(keys %got), $surviving,
		$node->name . ' holds exactly as many rows as there are keys whose highest version is a write');

	my @wrong;
	for my $id (1 .. $KEYS)
	{
		my $want = expected($id);
		my ($version, $val, $base) = split /\|/, $got{$id} // '', 3;
		my $have = defined $val ? "$version|$val" : 'absent';
		next if $want eq $have;
		my $why = $want eq 'absent' ? 'deleted key present'
		  : $have eq 'absent' ? 'written key missing' : 'other write kept';
		push @wrong, sprintf('id %d: %s; want %s, got %s', $id, $why,
			$want eq 'absent' ? 'absent (deleted at ' . v($best{$id}{version}) . ')'
			  : 'version ' . v($best{$id}{version}) . ' val ' . (split /\|/, $want, 2)[1],
			$have eq 'absent' ? 'absent'
			  : 'version ' . v($version) . " val $val"
			  . ($base eq '0' ? ' (an insert where written)' : ' (an update where written)')
			  . ($written{$version} ? '' : ', a version no region logged'));
	}
	is(scalar(@wrong), 0,
		$node->name . ': every key holds the write with the highest version, or is absent if that is a delete')
	  or diag(join("\n", @wrong));
	for my $line (@wrong[ 0 .. ($#wrong < 4 ? $#wrong : 4) ])
	{
		my ($id) = $line =~ /^id (\d+):/;
		my @last = (sort { $b->[0] <=> $a->[0] } @{ $history{$id} })[ 0 .. 3 ];
		diag("  id $id, its highest versions: "
			  . join('; ', map { v($_->[0]) . " $_->[1]" } grep { defined } @last));
	}
}

$_->stop for @all;
done_testing();
