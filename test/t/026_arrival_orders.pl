# Arrival orders: three regions write the same keys while every link
# between them is paused, then heal in different orders.  Whatever the
# order in which the writes arrive, every region ends, for each primary
# key, with the write of the highest version (R1): an insert or update
# leaves the row with that write's values and version, a delete leaves no
# row.
#
# Each round pauses all six directed links, runs every scenario below in a
# fixed sequence of statements (each commits before the next starts, so a
# later statement carries a higher version), writes a mark row in each
# region, and heals in one of three orders:
#
#   all at once   every link is resumed at once;
#   newest first  each region applies the stream of the region that wrote
#                 last first (the newest write arrives first), then the
#                 other one;
#   newest last   the reverse: the newest write arrives last.
#
# The scenarios are written for three roles, r1, r2 and r3, which write in
# that order within each scenario.  Every round runs them all, with the
# roles played by (a, b, c), (b, a, c), (b, c, a) or (c, a, b), so that
# each region plays each role; each of these is healed in each of the
# three orders.  With (a, b, c), S1 is insert(a)/insert(b)/delete(c); with
# (b, a, c), S6 truncates in a against an older insert of b and a newer
# one of c.
#
#   S1  r3 inserts a key, r1 and r2 insert it, r3 deletes it (the delete
#       is the newest write: r3 must hold the row to delete it);
#   S2  pre-existing row: r1 deletes and re-inserts it, r2 deletes it, r3
#       updates it (the update is the newest);
#   S2b the same with r2 updating and r3 deleting (the delete is newest);
#   S3  R6: r1 inserts a key; r2 inserts it and then deletes it;
#   S4  delete then re-insert: r1 inserts and deletes a key, r2 inserts it
#       anew; and a pre-existing row deleted by r1, deleted and inserted
#       anew by r2;
#   S5  R2: an update that changes the primary key is a delete of the old
#       key and an insert of the new one at the update's version, against
#       an older update, a newer update, and both, of the old key;
#   S6  R3: r2 truncates a table at version V: an older insert and update
#       of r1 are dropped (also where they arrive after the truncate), the
#       pre-existing rows are dropped, a newer insert and update of r3 are
#       kept.
#
# The expected state is computed from the versions: the version of each
# insert and update is read back from the writing statement (RETURNING);
# a delete or truncate is bracketed by two versions the region's clock
# issues just before and just after it (cosmosrep.next_version()).  That
# every statement's version is above the previous statement's is an
# assertion of its own.
#
# Each round writes a mark row in every region after its writes; since a
# stream is applied in commit order, a region that holds another's mark
# has applied every write that region made before.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @all = make_group(qw(a b c));
my %node = map { ($_->name => $_) } @all;

my @HEALS = ('all at once', 'newest first', 'newest last');
my @ROLES = ([qw(a b c)], [qw(b a c)], [qw(b c a)], [qw(c a b)]);

# one kv and one tr table per round, so that a round's failure does not
# spill into the next one, and a mark table for the fences
my @rounds;
for my $roles (@ROLES)
{
	push @rounds, map { { roles => $roles, heal => $_ } } @HEALS;
}
my $n = 0;
$_->{n} = ++$n for @rounds;

for my $node (@all)
{
	$node->safe_psql('postgres', join('',
			'CREATE TABLE marks (src text, round int, PRIMARY KEY (src, round));',
			map { "CREATE TABLE kv_$_ (id int PRIMARY KEY, v text NOT NULL);"
				  . "CREATE TABLE tr_$_ (id int PRIMARY KEY, v text NOT NULL);" } 1 .. $n));
}
$node{a}->safe_psql('postgres', join('',
		"SELECT cosmosrep.enable_table('marks');",
		map { "SELECT cosmosrep.enable_table('kv_$_'); SELECT cosmosrep.enable_table('tr_$_');" }
		  1 .. $n));
for my $node (@all)
{
	$node->poll_query_until('postgres',
		'SELECT count(*) = ' . (2 * $n + 1) . ' FROM cosmosrep.tables')
	  or die 'enabling the tables did not reach ' . $node->name;
}

##########
# Writes and their versions
##########

my @log;        # the writes of the current round: one entry per key written
my $stmt = 0;   # statement number within the round

# Run an INSERT or UPDATE that writes $rows rows (default 1) of $table in
# $node; log each written row with its version.  With moved_from => $key,
# the statement changes the primary key of row $key: log also the delete
# of the old key at the update's version (R2).
sub put
{
	my ($node, $table, $sql, %opt) = @_;
	my $out = $node->safe_psql('postgres', "$sql RETURNING id, v, _cr_version");
	my @rows = map { [ split /\|/ ] } split /\n/, $out;
	die "\"$sql\" in " . $node->name . ' wrote ' . scalar(@rows) . ' rows'
	  unless @rows == ($opt{rows} // 1);
	$stmt++;
	for my $row (@rows)
	{
		my ($id, $v, $version) = @$row;
		push @log, { table => $table, key => $id, lo => $version, hi => $version,
			row => "$v|$version", stmt => $stmt };
		push @log, { table => $table, key => $opt{moved_from}, lo => $version,
			hi => $version, row => undef, stmt => $stmt }
		  if defined $opt{moved_from};
	}
	return $rows[0][2];
}

# Run $sql, a DELETE of row $key of $table or a TRUNCATE of $table, in
# $node, between two versions taken from the region's clock; log a delete
# of each of @$keys with that bracket: the statement's version V satisfies
# before < V < after, since the clock issues increasing versions.
sub remove
{
	my ($node, $table, $sql, $keys) = @_;
	my @out = split /\n/, $node->safe_psql('postgres',
		"SELECT cosmosrep.next_version(); $sql; SELECT cosmosrep.next_version()");
	my ($before, $after) = ($out[0], $out[-1]);
	$stmt++;
	push @log, { table => $table, key => $_, lo => $before + 1, hi => $after - 1,
		row => undef, stmt => $stmt } for @$keys;
	return @out[ 1 .. $#out - 1 ];
}

sub del
{
	my ($node, $table, $key) = @_;
	my @gone = remove($node, $table, "DELETE FROM $table WHERE id = $key RETURNING id", [$key]);
	die "DELETE of $key in $table in " . $node->name . ' deleted ' . scalar(@gone) . ' rows'
	  unless "@gone" eq "$key";
	return;
}

# What every region must hold for $key of $table once all writes of the
# round arrived: the row of the write with the highest version, or '' if
# that is a delete.
sub expected
{
	my ($table, $key) = @_;
	my @w = sort { $a->{lo} <=> $b->{lo} } grep { $_->{table} eq $table && $_->{key} == $key } @log;
	die "no write of $key in $table" unless @w;
	return $w[-1]{row} // '';
}

# every statement of the round carries a higher version than the one before
sub versions_follow_statements
{
	my ($what) = @_;
	my @bad;
	for my $i (1 .. $#log)
	{
		my ($p, $c) = @log[ $i - 1, $i ];
		next if $p->{stmt} == $c->{stmt};
		push @bad, "statement $c->{stmt} ($c->{lo}..$c->{hi}) after statement $p->{stmt} ($p->{lo}..$p->{hi})"
		  unless $p->{hi} < $c->{lo};
	}
	is(join('; ', @bad), '', "$what: each statement has a higher version than the one before it");
	return;
}

##########
# Partition and heal
##########

sub partition
{
	partition_regions(\@all);
	return;
}

# resume the stream of $src in $dst
sub resume
{
	my ($dst, $src) = @_;
	$dst->safe_psql('postgres', "SELECT cosmosrep.resume_region('" . $src->name . "')");
	return;
}

sub wait_for_mark
{
	my ($dst, $src, $round, $what) = @_;
	ok($dst->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM marks WHERE src = '" . $src->name . "' AND round = $round"),
		"$what: " . $dst->name . ' applies the writes of ' . $src->name);
	return;
}

# $rank{region}: the higher, the later that region wrote
sub heal
{
	my ($round, $how, $what, %rank) = @_;

	if ($how eq 'all at once')
	{
		for my $dst (@all)
		{
			resume($dst, $_) for grep { $_ != $dst } @all;
		}
		for my $dst (@all)
		{
			wait_for_mark($dst, $_, $round, $what) for grep { $_ != $dst } @all;
		}
		return;
	}

	# each region resumes the stream it is to apply first, waits until it
	# has applied it, then resumes the other
	my %order;
	for my $dst (@all)
	{
		my @src = sort { $rank{ $b->name } <=> $rank{ $a->name } } grep { $_ != $dst } @all;
		@src = reverse @src if $how eq 'newest last';
		$order{ $dst->name } = \@src;
	}
	for my $phase (0, 1)
	{
		resume($_, $order{ $_->name }[$phase]) for @all;
		wait_for_mark($_, $order{ $_->name }[$phase], $round, $what) for @all;
	}
	return;
}

##########
# The rounds
##########

for my $round (@rounds)
{
	my $r = $round->{n};
	my ($r1, $r2, $r3) = map { $node{$_} } @{ $round->{roles} };
	my ($n1, $n2, $n3) = @{ $round->{roles} };
	my ($kv, $tr) = ("kv_$r", "tr_$r");
	my $what = "round $r (r1, r2, r3 = $n1, $n2, $n3; heal $round->{heal})";
	my @checks;    # [table, key, what it proves]

	@log = ();
	$stmt = 0;

	# rows that exist everywhere before the partition
	put($r3, $kv, "INSERT INTO $kv VALUES (2, 'pre'), (3, 'pre'), (6, 'pre'),"
		  . " (10, 'pre'), (12, 'pre'), (14, 'pre')", rows => 6);
	put($r3, $tr, "INSERT INTO $tr VALUES (1, 'pre'), (2, 'pre'), (3, 'pre')", rows => 3);
	wait_for_same_table(\@all, $kv);
	wait_for_same_table(\@all, $tr);

	partition();

	# S1: insert, insert, delete of one key
	put($r3, $kv, "INSERT INTO $kv VALUES (1, '$n3 first insert')");
	put($r1, $kv, "INSERT INTO $kv VALUES (1, '$n1 insert')");
	put($r2, $kv, "INSERT INTO $kv VALUES (1, '$n2 insert')");
	del($r3, $kv, 1);
	push @checks, [ $kv, 1,
		"S1 insert $n1 / insert $n2 / delete $n3: key 1 stays deleted: the delete is newer than both inserts, whichever arrives first" ];

	# S2: insert, delete, update of a pre-existing row
	del($r1, $kv, 2);
	put($r1, $kv, "INSERT INTO $kv VALUES (2, '$n1 re-insert')");
	del($r2, $kv, 2);
	put($r3, $kv, "UPDATE $kv SET v = '$n3 update' WHERE id = 2");
	push @checks, [ $kv, 2,
		"S2 insert $n1 / delete $n2 / update $n3: key 2 holds ${n3}'s update, newer than the insert and the delete" ];

	# S2b: insert, update, delete of a pre-existing row
	del($r1, $kv, 3);
	put($r1, $kv, "INSERT INTO $kv VALUES (3, '$n1 re-insert')");
	put($r2, $kv, "UPDATE $kv SET v = '$n2 update' WHERE id = 3");
	del($r3, $kv, 3);
	push @checks, [ $kv, 3,
		"S2b insert $n1 / update $n2 / delete $n3: key 3 stays deleted: the delete is newer than the insert and the update" ];

	# S3 (R6): r1 inserts; r2 inserts and deletes
	put($r1, $kv, "INSERT INTO $kv VALUES (4, '$n1 insert')");
	put($r2, $kv, "INSERT INTO $kv VALUES (4, '$n2 insert')");
	del($r2, $kv, 4);
	push @checks, [ $kv, 4,
		"S3 (R6) insert $n1 / insert and delete $n2: key 4 stays deleted: ${n1}'s insert, older than the delete, does not resurrect it" ];

	# S4: delete, then insert anew
	put($r1, $kv, "INSERT INTO $kv VALUES (5, '$n1 insert')");
	del($r1, $kv, 5);
	put($r2, $kv, "INSERT INTO $kv VALUES (5, '$n2 insert anew')");
	push @checks, [ $kv, 5,
		"S4 insert and delete $n1 / insert $n2: key 5 holds ${n2}'s insert: an insert newer than the delete is kept" ];
	del($r1, $kv, 6);
	del($r2, $kv, 6);
	put($r2, $kv, "INSERT INTO $kv VALUES (6, '$n2 insert anew')");
	push @checks, [ $kv, 6,
		"S4 delete $n1 / delete and insert $n2 of a pre-existing row: key 6 holds ${n2}'s new insert, newer than both deletes" ];

	# S5 (R2): key changes against older and newer updates of the old key
	put($r1, $kv, "UPDATE $kv SET v = '$n1 update' WHERE id = 10");
	put($r2, $kv, "UPDATE $kv SET id = 11, v = '$n2 key change' WHERE id = 10", moved_from => 10);
	push @checks,
	  [ $kv, 10, "S5 (R2) update $n1 / key change 10 to 11 $n2: old key 10 stays deleted: the key change, newer than the update, deletes it" ],
	  [ $kv, 11, "S5 (R2) update $n1 / key change 10 to 11 $n2: new key 11 holds ${n2}'s key change" ];

	put($r1, $kv, "UPDATE $kv SET id = 13, v = '$n1 key change' WHERE id = 12", moved_from => 12);
	put($r2, $kv, "UPDATE $kv SET v = '$n2 update' WHERE id = 12");
	push @checks,
	  [ $kv, 12, "S5 (R2) key change 12 to 13 $n1 / update $n2: old key 12 holds ${n2}'s update, newer than the key change" ],
	  [ $kv, 13, "S5 (R2) key change 12 to 13 $n1 / update $n2: new key 13 holds ${n1}'s key change, also where the newer update of the old key came first" ];

	put($r1, $kv, "UPDATE $kv SET v = '$n1 update' WHERE id = 14");
	put($r2, $kv, "UPDATE $kv SET id = 15, v = '$n2 key change' WHERE id = 14", moved_from => 14);
	put($r3, $kv, "UPDATE $kv SET v = '$n3 update' WHERE id = 14");
	push @checks,
	  [ $kv, 14, "S5 (R2) update $n1 / key change 14 to 15 $n2 / update $n3: old key 14 holds ${n3}'s update, the newest write of the key" ],
	  [ $kv, 15, "S5 (R2) update $n1 / key change 14 to 15 $n2 / update $n3: new key 15 holds ${n2}'s key change" ];

	# S6 (R3): truncate against an older insert and update and a newer
	# insert and update
	put($r1, $tr, "INSERT INTO $tr VALUES (20, '$n1 older insert')");
	put($r1, $tr, "UPDATE $tr SET v = '$n1 older update' WHERE id = 1");
	remove($r2, $tr, "TRUNCATE $tr", [ 1, 2, 3, 20, 21 ]);
	put($r3, $tr, "INSERT INTO $tr VALUES (21, '$n3 newer insert')");
	put($r3, $tr, "UPDATE $tr SET v = '$n3 newer update' WHERE id = 2");
	push @checks,
	  [ $tr, 1, "S6 (R3) truncate $n2: key 1, updated by $n1 before the truncate, is gone" ],
	  [ $tr, 2, "S6 (R3) truncate $n2: key 2, updated by $n3 after the truncate, holds that update" ],
	  [ $tr, 3, "S6 (R3) truncate $n2: key 3, written before the partition, is gone" ],
	  [ $tr, 20, "S6 (R3) truncate $n2: key 20, inserted by $n1 before the truncate, is gone, also where it arrives after the truncate" ],
	  [ $tr, 21, "S6 (R3) truncate $n2: key 21, inserted by $n3 after the truncate, is kept" ];

	versions_follow_statements($what);

	$_->safe_psql('postgres', "INSERT INTO marks VALUES ('" . $_->name . "', $r)") for @all;
	heal($r, $round->{heal}, $what, $n1 => 1, $n2 => 2, $n3 => 3);

	# every region has applied every write of the round: check each key
	for my $node (@all)
	{
		my %got;
		for my $table ($kv, $tr)
		{
			for my $line (split /\n/, $node->safe_psql('postgres',
					"SELECT id, v, _cr_version FROM $table"))
			{
				my ($id, $rest) = split /\|/, $line, 2;
				$got{$table}{$id} = $rest;
			}
		}
		for my $check (@checks)
		{
			my ($table, $key, $proves) = @$check;
			is($got{$table}{$key} // '', expected($table, $key),
				$node->name . ": $proves [$what]");
		}
		my $want = grep { expected($tr, $_) ne '' } 1, 2, 3, 20, 21;
		is(scalar(keys %{ $got{$tr} // {} }), $want,
			$node->name . ": S6 (R3) truncate $n2: $tr holds no other row [$what]");
	}

	# Every region has applied everything: the tables are final, so there
	# is nothing to wait for beyond a moment.
	{
		local $PostgreSQL::Test::Utils::timeout_default = 5;
		wait_for_same_table(\@all, $kv);
		wait_for_same_table(\@all, $tr);
	}
}

ok_all_streaming(\@all, 'none of the arrival orders stops replication');

$_->stop for @all;
done_testing();
