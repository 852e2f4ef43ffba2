# The two policies that are not the version, under chaos: three regions
# write the same keys at once (pgbench in every region), while replication
# links are paused and resumed at random and one region is killed with
# kill -9 and restarted, in each of several rounds (fresh keys each round).
# Once every link is resumed and every region has applied every other's
# writes, each region must hold exactly what the policy prescribes, key by
# key, computed from the writes themselves.
#
# items: last_writer_wins on the path seq (int).  Conflicting writes go to
#   the higher seq (equal: the higher version), causally ordered ones to
#   the higher version.  Which writes are concurrent depends on what each
#   writer had seen, so the load is one where both rules agree: inserts
#   (ON CONFLICT DO NOTHING) with a random seq, and updates that only raise
#   seq (seq = seq + 1..5), no deletes.  A write made on top of another
#   then has both a higher seq and a higher version, so every decision,
#   conflict or not, keeps the higher (seq, version), and each key must end
#   with the committed write of the highest (seq, version) of all regions:
#   its seq, val and _cr_version, in every region.
#
# pay: custom, with a resolver that merges like a maximum and a union: the
#   row of the higher (rank, touched_by) is kept, with the sorted distinct
#   union of both rows' tags (a tie on both keeps incoming, the same row
#   but for the tags); a delete keeps the existing row.  The load only
#   moves rows up in that order: inserts (ON CONFLICT DO NOTHING), and
#   updates that raise rank by 0 or 1 up to 3, add a tag, and set
#   touched_by to the writing region if rank rose, else to the greater of
#   it and the writing region.  Each key must end, in every region, with
#   the highest rank committed for it, touched_by the greatest among the
#   writes of that rank, the union of all tags committed, and the highest
#   version committed or a later one: the arbiter a runs the resolver and
#   writes its row as a new write.  (touched_by is ordered by value so
#   that the oracle can be computed from the writes alone; the arbiter
#   would make any other rule converge too: test 110.)
#
# Both orders are also checked while the load runs: a sampler in every
# region records the seq of every item and the rank and number of tags of
# every payment about every 0.2 s; no region may ever show one going
# down (payments: in the arbiter a; elsewhere they are tentative until
# a's resolution arrives) (between two samples of one server lifetime: apply commits
# asynchronously, so a kill -9 may lose applied changes, which apply again).
#
# The writes come from logs that AFTER triggers keep in each region: an
# ordinary trigger fires for local sessions only, never in the apply
# worker (session_replication_role = replica), and in the writing
# transaction, so each region's log holds exactly its committed writes,
# with the version cosmosrep stamped.
#
# The chaos is random; the seed is printed and CHAOS_SEED repeats a run's
# pauses, crashes and pgbench seeds (not the timing).
use strict;
use warnings;

use CosmosRep::Test;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $KEYS = 200;
my $ROUNDS = 2;
my $LOAD_SECONDS = 16;
my $RATE = 120;    # transactions per second and region, both tables
my $TICK = 0.5;    # seconds between two pauses or resumes

my $seed = ($ENV{CHAOS_SEED} // '') =~ /^(\d+)$/ ? $1 : int(rand(1000000));
srand($seed);
diag("chaos seed $seed (CHAOS_SEED=$seed repeats the pauses, the crashes and pgbench's seeds)");

my ($ra, $rb, $rc) = make_group(qw(a b c));
my @all = ($ra, $rb, $rc);
my @NAMES = map { $_->name } @all;
my %node = map { ($_->name => $_) } @all;
my %region_of = split /[|\n]/,
  $ra->safe_psql('postgres', 'SELECT region_id, region_name FROM cosmosrep.regions');

sub sql
{
	my ($r, $query) = @_;
	return $node{$r}->safe_psql('postgres', $query);
}

# a version, with the region that wrote it (its low 8 bits)
sub v
{
	my ($version) = @_;
	return "$version (" . ($region_of{ $version & 255 } // 'merge') . ')';
}

##########
# Schema: items (path), pay (custom), fence (marks that a region applied
# everything another wrote before); the local logs and samples
##########

my $SCHEMA = <<'SQL';
CREATE TABLE items (id int PRIMARY KEY, seq int NOT NULL, val text NOT NULL);
CREATE TABLE pay (id int PRIMARY KEY, rank int NOT NULL, tags text[] NOT NULL,
                  touched_by text NOT NULL);
CREATE TABLE fence (round int, region text, PRIMARY KEY (round, region));

-- apply runs with search_path = '': every name is qualified
CREATE FUNCTION resolve_pay(incoming pay, existing pay, is_tombstone boolean,
                            conflicting pay[])
RETURNS pay LANGUAGE plpgsql AS $$
DECLARE
    kept public.pay;
BEGIN
    IF is_tombstone OR incoming.id IS NULL THEN
        RETURN existing;
    END IF;
    IF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    IF existing.rank > incoming.rank
       OR (existing.rank = incoming.rank
           AND existing.touched_by COLLATE "C" > incoming.touched_by COLLATE "C") THEN
        kept := existing;
    ELSE
        kept := incoming;
    END IF;
    kept.tags := ARRAY(SELECT DISTINCT t COLLATE "C"
                         FROM pg_catalog.unnest(incoming.tags OPERATOR(pg_catalog.||) existing.tags) t
                        ORDER BY 1);
    RETURN kept;
END
$$;
SQL

sql($_, $SCHEMA) for @NAMES;
sql('a', q{
	SELECT cosmosrep.enable_table('items', path => 'seq');
	SELECT cosmosrep.enable_table('pay', policy => 'custom', resolver => 'public.resolve_pay');
	SELECT cosmosrep.enable_table('fence');
});
my $POLICIES = "fence|last_writer_wins||\nitems|last_writer_wins|seq|\n"
  . 'pay|custom||resolve_pay(pay,pay,boolean,pay[])';
for my $r (@NAMES)
{
	is(wait_for_policies($node{$r}, $POLICIES), $POLICIES, "$r: items has the path seq, pay the resolver")
	  or die "the tables are not multi-region in $r";
}

for my $r (@NAMES)
{
	sql($r, sprintf(<<'SQL', $r, $r));
CREATE TABLE items_log (region text, id int, seq int, val text, version bigint);
CREATE TABLE pay_log (region text, id int, rank int, tags text[], touched_by text,
                      version bigint);
CREATE FUNCTION log_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.items_log VALUES (TG_ARGV[0], NEW.id, NEW.seq, NEW.val, NEW._cr_version);
    RETURN NULL;
END $$;
CREATE FUNCTION log_pay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pay_log
         VALUES (TG_ARGV[0], NEW.id, NEW.rank, NEW.tags, NEW.touched_by, NEW._cr_version);
    RETURN NULL;
END $$;
CREATE TRIGGER log_items AFTER INSERT OR UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION log_items('%s');
CREATE TRIGGER log_pay AFTER INSERT OR UPDATE ON pay
    FOR EACH ROW EXECUTE FUNCTION log_pay('%s');

-- v1: seq of an item, rank of a payment; v2: the number of its tags
CREATE TABLE samples (epoch int, n int, tbl text, id int, v1 int, v2 int);
CREATE TABLE sampler_stop (x int);
SQL
}

##########
# The samplers: one DO loop in each region, a sample every 0.2 s, each in
# its own transaction (one snapshot of both tables), until sampler_stop
# holds a row.  An epoch is one sampler session; a restarted region gets a
# new one.
##########

my (%sampler, %sampler_err, $epochs);

sub start_sampler
{
	my ($r) = @_;
	my $epoch = ++$epochs;
	my $do = sprintf(<<'SQL', $epoch, $epoch);
DO $$
DECLARE
    n int := 0;
BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM public.sampler_stop) AND n < 3000 LOOP
        INSERT INTO public.samples SELECT %d, n, 'items', id, seq, 0 FROM public.items;
        INSERT INTO public.samples
             SELECT %d, n, 'pay', id, rank, pg_catalog.cardinality(tags) FROM public.pay;
        COMMIT;
        n := n + 1;
        PERFORM pg_catalog.pg_sleep(0.2);
    END LOOP;
END
$$
SQL
	$sampler_err{$r} = '';
	$sampler{$r} = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node{$r}->host,
			'-p', $node{$r}->port, '-d', 'postgres', '-c', $do
		],
		'>', \my $out, '2>', \$sampler_err{$r});
	return;
}

##########
# The load: 2 clients per region, each transaction one statement on a
# random key of the round, on items or pay with equal weight; inserts 25%,
# updates 75%.
##########

my $tmp = PostgreSQL::Test::Utils::tempdir();
my (%load, %load_err, %load_out);

sub start_load
{
	my ($r, $seconds, $round) = @_;
	my $items = "$tmp/items_$r.sql";
	my $pay = "$tmp/pay_$r.sql";

	PostgreSQL::Test::Utils::append_to_file($items, <<"SQL") unless -e $items;
\\set id :off + random(1, $KEYS)
\\set op random(1, 100)
\\set n random(1, 1000000000)
\\set s random(1, 20)
\\set d random(1, 5)
\\if :op <= 25
INSERT INTO items VALUES (:id, :s, '$r-' || :n) ON CONFLICT (id) DO NOTHING;
\\else
UPDATE items SET seq = seq + :d, val = '$r-' || :n WHERE id = :id;
\\endif
SQL
	PostgreSQL::Test::Utils::append_to_file($pay, <<"SQL") unless -e $pay;
\\set id :off + random(1, $KEYS)
\\set op random(1, 100)
\\set n random(1, 1000000000)
\\set up random(0, 3) / 3
\\if :op <= 25
INSERT INTO pay VALUES (:id, :up, ARRAY['$r' || :n], '$r') ON CONFLICT (id) DO NOTHING;
\\else
UPDATE pay SET rank = least(rank + :up, 3), tags = ARRAY(SELECT DISTINCT t COLLATE "C" FROM unnest(tags || ('$r' || :n)) t ORDER BY 1), touched_by = CASE WHEN least(rank + :up, 3) > rank THEN '$r' ELSE greatest(touched_by COLLATE "C", '$r') END WHERE id = :id;
\\endif
SQL
	my $pgseed = $seed * 100 + $round * 10 + (grep { $NAMES[$_] eq $r } 0 .. $#NAMES)[0];
	($load_out{$r}, $load_err{$r}) = ('', '');
	$load{$r} = IPC::Run::start(
		[
			'pgbench', '-n', '-c', '2', '-j', '2', '-T', $seconds,
			'-R', $RATE, '--max-tries', '10', '-f', "$items\@1", '-f', "$pay\@1",
			'-D', 'off=' . ($round * 1000), "--random-seed=$pgseed",
			'-h', $node{$r}->host, '-p', $node{$r}->port, 'postgres'
		],
		'>', \$load_out{$r}, '2>', \$load_err{$r});
	return;
}

# wait for a region's pgbench to end by itself (-T), or kill the one whose
# region was killed
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
	my ($failed) = $load_out{$r} =~ /number of failed transactions: (\d+)/;
	$load_err{$r} =~ s/^pgbench: setting random seed to \d+\n//m;
	diag(sprintf('  pgbench in %s: %s transactions, %s failed%s', $r,
			$done // '?', $failed // '?',
			$load_err{$r} =~ /\S/ ? '; stderr: ' . substr($load_err{$r}, 0, 400) : ''));
	return;
}

# "<kind> <remote>><local> local <version> remote <version> <resolution>"
# and the rows' values of $cols, for each conflict of key $id of $table
# that region $r recorded
sub key_conflicts
{
	my ($r, $table, $id, @cols) = @_;
	my $rows = join(", ' ', ",
		map { "coalesce(local_row->>'$_', '-'), '/', coalesce(remote_row->>'$_', '-'), '/',"
			  . " coalesce(winner_row->>'$_', '-')" } @cols);
	return sql($r, qq{
		SELECT coalesce(string_agg(concat_ws(' ', '   ', kind, remote_region || '>' || local_region,
		                                     'local', local_version, 'remote', remote_version,
		                                     resolution, concat(' local/remote/winner ', $rows),
		                                     error),
		                           E'\\n' ORDER BY conflict_id), '    none')
		  FROM cosmosrep.conflicts
		 WHERE table_name = '$table'::regclass AND key->>'id' = '$id'});
}

##########
# The rounds
##########

my @links;
for my $src (@NAMES)
{
	push @links, map { [ $src, $_ ] } grep { $_ ne $src } @NAMES;
}

start_sampler($_) for @NAMES;
my %crashed;    # region => number of times it was killed

for my $round (1 .. $ROUNDS)
{
	my $off = $round * 1000;
	my $range = 'id > ' . $off . ' AND id <= ' . ($off + $KEYS);
	my %paused;
	my ($pauses, $resumes) = (0, 0);
	my $victim = $NAMES[ int(rand(@NAMES)) ];
	my $crash_at = $LOAD_SECONDS * (0.3 + 0.4 * rand());

	diag("round $round: keys $off + 1..$KEYS, kill -9 of $victim at about "
		  . sprintf('%.1f', $crash_at) . ' s');
	my $start = time;
	start_load($_, $LOAD_SECONDS, $round) for @NAMES;
	my $crash_done = 0;
	while (time < $start + $LOAD_SECONDS - 1)
	{
		my $tick = time;
		if (!$crash_done && $tick >= $start + $crash_at)
		{
			crash_region($node{$victim});
			end_load($victim, 1);    # its clients died with it
			$sampler{$victim}->finish;    # and its sampler
			start_sampler($victim);
			my $left = int($start + $LOAD_SECONDS - time);
			start_load($victim, $left, $round) if $left >= 2;
			$crash_done = 1;
			$crashed{$victim}++;
			diag(sprintf('  killed and restarted %s at %.1f s (back after %.1f s)',
					$victim, $tick - $start, time - $tick));
			next;
		}
		my ($src, $dst) = @{ $links[ int(rand(@links)) ] };
		my $fn = $paused{"$src>$dst"} ? 'resume_region' : 'pause_region';
		sql($dst, "SELECT cosmosrep.$fn('$src')");
		$paused{"$src>$dst"} = !$paused{"$src>$dst"};
		$paused{"$src>$dst"} ? $pauses++ : $resumes++;
		my $rest = $TICK - (time - $tick);
		select(undef, undef, undef, $rest) if $rest > 0;
	}
	ok($crash_done, "round $round: $victim was killed with kill -9 and restarted under load");
	end_load($_, 0) for sort keys %load;
	diag("  links paused $pauses times and resumed $resumes times");

	# heal: resume every link, then a fence row from every region; apply
	# is in commit order, so a region holding another's fence row has
	# applied everything that region wrote before it
	for my $r (@NAMES)
	{
		sql($r, join(';', map { "SELECT cosmosrep.resume_region('$_')" } grep { $_ ne $r } @NAMES));
	}
	my $heal_start = time;
	sql($_, "INSERT INTO fence VALUES ($round, '$_')") for @NAMES;
	for my $r (@NAMES)
	{
		ok($node{$r}->poll_query_until('postgres',
				"SELECT count(*) = 3 FROM fence WHERE round = $round"),
			"round $round: $r applies every region's writes once all links are resumed");
	}
	diag(sprintf('  every region applied the backlog %.1f s after the heal', time - $heal_start));
	my $healed_at = sql('a', 'SELECT now()');

	for my $r (@NAMES)
	{
		ok($node{$r}->poll_query_until('postgres', qq{
				SELECT count(*) = 2
				       AND bool_and(state = 'streaming'
				                    AND (last_error IS NULL OR last_error_at < '$healed_at'))
				  FROM cosmosrep.replication_status}),
			"round $round: $r streams from every region after the heal, with no error since")
		  or diag(sql($r, 'SELECT source_region, state, last_error, last_error_at'
				  . ' FROM cosmosrep.replication_status'));
	}

	for my $table (qw(items pay))
	{
		my %sum = map { ($_ => table_checksum($node{$_}, $table)) } @NAMES;
		is(scalar(keys %{ { reverse %sum } }), 1,
			"round $round: $table is identical in every region, cosmosrep's columns included")
		  or diag(join("\n", map { "$_: $sum{$_}" } @NAMES));
	}

	# the logs of every region: exactly the committed local writes
	my (%iw, %pw, %seen, @bad);
	for my $r (@NAMES)
	{
		for my $row (split /\n/, sql($r, "SELECT region, id, seq, version, val FROM items_log WHERE $range"))
		{
			my ($region, $id, $seq, $version, $val) = split /\|/, $row;
			push @{ $iw{$id} }, { region => $region, seq => $seq, version => $version, val => $val };
			push @bad, "items version $version logged twice" if $seen{$version}++;
			push @bad, "items $id $val logged in $region has the version " . v($version)
			  if ($region_of{ $version & 255 } // '') ne $region;
		}
		for my $row (split /\n/, sql($r, "SELECT region, id, rank, touched_by, version,"
				  . " array_to_string(tags, ',') FROM pay_log WHERE $range"))
		{
			my ($region, $id, $rank, $touched, $version, $tags) = split /\|/, $row;
			push @{ $pw{$id} }, { region => $region, rank => $rank, touched => $touched,
				version => $version, tags => [ split /,/, $tags ] };
			push @bad, "pay version $version logged twice" if $seen{$version}++;
			push @bad, "pay $id logged in $region has the version " . v($version)
			  if ($region_of{ $version & 255 } // '') ne $region;
		}
	}
	my $nitems = 0;
	$nitems += @$_ for values %iw;
	my $npay = 0;
	$npay += @$_ for values %pw;
	diag("  committed: $nitems writes of items on " . scalar(keys %iw) . " keys, $npay of pay on "
		  . scalar(keys %pw) . ' keys');
	cmp_ok($nitems, '>=', 500, "round $round: the load committed hundreds of writes of items");
	cmp_ok($npay, '>=', 500, "round $round: the load committed hundreds of writes of pay");
	is(join("\n", @bad), '',
		"round $round: every local write is logged once, with a version of its own region");

	##########
	# items: the write of the highest (seq, version), everywhere
	##########

	my %iwant;
	for my $id (keys %iw)
	{
		my ($top) = sort { $b->{seq} <=> $a->{seq} || $b->{version} <=> $a->{version} } @{ $iw{$id} };
		$iwant{$id} = "$top->{seq}|$top->{val}|$top->{version}";
	}
	# the oracle is the path's: on some keys the newest write is another
	my $lww_differs = grep {
		my ($newest) = sort { $b->{version} <=> $a->{version} } @{ $iw{$_} };
		$iwant{$_} ne "$newest->{seq}|$newest->{val}|$newest->{version}"
	} keys %iw;
	cmp_ok($lww_differs, '>', 0,
		"round $round: on some items the highest seq is not the newest write");
	for my $r (@NAMES)
	{
		my %got = map { my ($id, $rest) = split /\|/, $_, 2; ($id => $rest) }
		  split /\n/, sql($r, "SELECT id, seq, val, _cr_version FROM items WHERE $range");
		my @wrong;
		for my $id (sort { $a <=> $b } keys %{ { %iwant, %got } })
		{
			my $want = $iwant{$id} // 'absent';
			my $have = $got{$id} // 'absent';
			push @wrong, $id if $want ne $have;
		}
		is(scalar(@wrong), 0,
			"round $round: $r: every item holds the committed write of the highest seq"
			  . ' (equal seqs: the highest version) of all regions')
		  or diag("  " . scalar(@wrong) . " keys differ, the first ones:");
		for my $id (@wrong[ 0 .. ($#wrong < 2 ? $#wrong : 2) ])
		{
			my @top = (sort { $b->{seq} <=> $a->{seq} || $b->{version} <=> $a->{version} }
				  @{ $iw{$id} // [] })[ 0 .. 5 ];
			diag("  item $id: want " . ($iwant{$id} // 'absent') . ", $r holds "
				  . ($got{$id} // 'absent') . "\n  its writes of the highest seqs (seq val version):\n"
				  . join("\n", map { "    $_->{region}: $_->{seq} $_->{val} " . v($_->{version}) }
					  grep { defined } @top)
				  . "\n  what each region holds (seq val version base region) and its conflicts"
				  . " of the key (seq local/remote/winner):\n"
				  . join("\n", map {
						"  $_: " . sql($_, "SELECT concat_ws(' ', seq, val, _cr_version, _cr_base, _cr_region)"
							  . " FROM items WHERE id = $id") . "\n" . key_conflicts($_, 'items', $id, 'seq')
					} @NAMES));
		}
	}

	##########
	# pay: the highest rank, the union of the tags, the highest version
	##########

	my %pwant;
	for my $id (keys %pw)
	{
		my @w = @{ $pw{$id} };
		my ($top) = sort { $b->{rank} <=> $a->{rank} || $b->{touched} cmp $a->{touched} } @w;
		my ($version) = sort { $b <=> $a } map { $_->{version} } @w;
		my %tags = map { ($_ => 1) } map { @{ $_->{tags} } } @w;
		$pwant{$id} = join('|', $top->{rank}, join(',', sort keys %tags), $top->{touched}, $version);
	}
	my %ranks;
	my %pay_final;
	$ranks{ (split /\|/, $_)[0] }++ for values %pwant;
	diag('  payments end at rank ' . join(', ', map { "$_: " . ($ranks{$_} // 0) } 0 .. 3));
	for my $r (@NAMES)
	{
		my %got = map { my ($id, $rest) = split /\|/, $_, 2; ($id => $rest) }
		  split /\n/, sql($r, "SELECT id, rank, array_to_string(tags, ','), touched_by, _cr_version"
			  . " FROM pay WHERE $range");
		my @wrong;
		for my $id (sort { $a <=> $b } keys %{ { %pwant, %got } })
		{
			my ($want, $want_version) = ($pwant{$id} // 'absent') =~ /^(.*?)\|?(\d*)$/;
			my ($have, $have_version) = ($got{$id} // 'absent') =~ /^(.*?)\|?(\d*)$/;
			# the highest version, or a resolution of the arbiter after it
			push @wrong, $id if $want ne $have || $have_version eq ''
			  || $have_version < $want_version
			  || ($have_version > $want_version && ($region_of{ $have_version & 255 } // '') ne 'a');
			$pay_final{$id}{$r} = $got{$id};
		}
		is(scalar(@wrong), 0,
			"round $round: $r: every payment holds the highest rank committed, touched_by of that"
			  . ' rank\'s greatest, the union of all tags committed and the highest version or'
			  . ' a later one of the arbiter a')
		  or diag("  " . scalar(@wrong) . " keys differ, the first ones:");
		for my $id (@wrong[ 0 .. ($#wrong < 2 ? $#wrong : 2) ])
		{
			my @w = sort { $a->{version} <=> $b->{version} } @{ $pw{$id} // [] };
			diag("  payment $id: want " . ($pwant{$id} // 'absent') . ", $r holds "
				  . ($got{$id} // 'absent') . "\n  its writes (rank touched_by version tags):\n"
				  . join("\n", map { "    $_->{region}: $_->{rank} $_->{touched} " . v($_->{version})
						  . ' ' . join(',', @{ $_->{tags} }) } @w)
				  . "\n  what each region holds (rank touched_by version base region tags) and its"
				  . " conflicts of the key (rank, touched_by local/remote/winner):\n"
				  . join("\n", map {
						"  $_: " . sql($_, "SELECT concat_ws(' ', rank, touched_by, _cr_version, _cr_base,"
							  . " _cr_region, tags) FROM pay WHERE id = $id") . "\n"
						  . key_conflicts($_, 'pay', $id, 'rank', 'touched_by')
					} @NAMES));
		}
	}
	is(scalar(grep { my $f = $pay_final{$_}; ($f->{a} // '') ne ($f->{b} // '')
			  || ($f->{a} // '') ne ($f->{c} // '') } keys %pay_final), 0,
		"round $round: every payment is identical, version included, in the three regions");

	# the chaos made the policies decide
	my %n;
	for my $r (@NAMES)
	{
		my ($over, $inserts, $merged, $all) = split /\|/, sql($r, qq{
			SELECT count(*) FILTER (WHERE table_name = 'items'::regclass
			                        AND ((resolution = 'local_kept' AND remote_version > local_version)
			                             OR (resolution = 'remote_applied'
			                                 AND remote_version < local_version))),
			       count(*) FILTER (WHERE table_name = 'items'::regclass AND kind = 'insert_exists'),
			       count(*) FILTER (WHERE table_name = 'pay'::regclass AND resolution = 'merged'),
			       count(*)
			  FROM cosmosrep.conflicts WHERE (key->>'id')::int > $off AND (key->>'id')::int <= $off + $KEYS});
		$n{over} += $over;
		$n{inserts} += $inserts;
		$n{merged} += $merged;
		$n{all} += $all;
	}
	diag("  conflicts in the three regions: $n{all}; items: $n{over} where the path overruled the"
		  . " version, $n{inserts} concurrent inserts; pay: $n{merged} merged");
	cmp_ok($n{over}, '>', 0,
		"round $round: items: the path decided conflicts against the version");
	cmp_ok($n{merged}, '>', 0, "round $round: pay: the resolver merged rows");
}

##########
# No failed resolution, no rejected change, anywhere
##########

for my $r (@NAMES)
{
	is(sql($r, q{SELECT count(*) FROM cosmosrep.conflicts
	              WHERE resolution = 'error' OR kind = 'apply_error'}), '0',
		"$r: no conflict was resolved as 'error' and no change was rejected")
	  or diag(sql($r, q{
			SELECT string_agg(concat_ws(' ', table_name, key, kind, remote_region, resolution, error),
			                  E'\n' ORDER BY conflict_id)
			  FROM (SELECT * FROM cosmosrep.conflicts
			         WHERE resolution = 'error' OR kind = 'apply_error'
			         ORDER BY conflict_id LIMIT 10) c}));
}

##########
# Never down: the samples of each region, within each server lifetime
##########

sql($_, 'INSERT INTO sampler_stop VALUES (1)') for @NAMES;
for my $r (@NAMES)
{
	$sampler{$r}->finish;
	is($sampler_err{$r}, '', "$r: the last sampler ended cleanly");
}

for my $r (@NAMES)
{
	my ($samples, $epochs_here) = split /\|/,
	  sql($r, 'SELECT count(DISTINCT (epoch, n)), count(DISTINCT epoch) FROM samples');
	diag("$r: $samples samples in $epochs_here server lifetimes");
	cmp_ok($samples, '>=', 50, "$r: the sampler ran through the rounds");
	for my $check ([ 'items', 'v1', 'seq' ], [ 'pay', 'v1', 'rank' ], [ 'pay', 'v2', 'number of tags' ])
	{
		my ($tbl, $col, $what) = @$check;

		# elsewhere a payment holds a write by version until the arbiter's
		# resolution arrives: tentative, it may go down meanwhile
		next if $tbl eq 'pay' && $r ne 'a';
		my ($count, $list) = split /\|/, sql($r, qq{
			SELECT count(*),
			       coalesce(string_agg(format('%s %s, server lifetime %s: %s at sample %s, then %s at sample %s',
			                                  tbl, id, epoch, p, pn, $col, n), E'\\n'), '')
			  FROM (SELECT *, lag($col) OVER w AS p, lag(n) OVER w AS pn
			          FROM samples WHERE tbl = '$tbl'
			        WINDOW w AS (PARTITION BY epoch, id ORDER BY n)) s
			 WHERE $col < p}), 2;
		is($count, '0', "$r: no $tbl key's $what ever went down")
		  or diag(join("\n", grep { defined } (split /\n/, $list)[ 0 .. 9 ]));
	}
	next unless $crashed{$r};
	# across a kill -9: only informative (applied changes may be lost)
	my $across = sql($r, q{
		WITH last AS (SELECT DISTINCT ON (epoch) epoch, n FROM samples ORDER BY epoch, n DESC),
		     first AS (SELECT DISTINCT ON (epoch) epoch, n FROM samples ORDER BY epoch, n)
		SELECT count(*) FROM last l JOIN first f ON f.epoch = (SELECT min(epoch) FROM samples
		                                                       WHERE epoch > l.epoch)
		  JOIN samples a ON a.epoch = l.epoch AND a.n = l.n
		  JOIN samples b ON b.epoch = f.epoch AND b.n = f.n AND b.tbl = a.tbl AND b.id = a.id
		 WHERE b.v1 < a.v1 OR b.v2 < a.v2});
	diag("$r: $across keys were lower right after a kill -9 than just before it"
		  . ' (applied changes lost with the crash, applied again)');
}

$_->stop for @all;
done_testing();
