# Issue 23, no false conflicts: a write made after seeing another is never
# treated as concurrent with it, however late the earlier one arrives and
# over however many regions the chain runs.
#
# Three regions a, b, c and a custom-policy table whose resolver keeps
# existing whenever it is asked (the tie rule of Cosmos DB's examples): a
# causal pair taken for a conflict would throw the later write away, and
# a conflict resolved by the arbiter would leave the arbiter's version,
# not the last write's.  So each key must end, in every region, with the
# last write of its chain at that write's own version, and no region may
# record a conflict.
#
# Each round plays the roles (r1, r2, r3) with a rotation of (a, b, c), so
# that each region is each role, and on four keys that every region holds:
#
#   k1  r1 updates X; r2, holding X, updates Y; r3, holding Y, updates W.
#   k2  the same, and r2, holding W, updates V: a chain of four writes.
#   k3  r1 updates X; r2, holding X, deletes the key: the key ends deleted.
#   k4  r1 updates X; r2, holding X, deletes the key; r3, holding the
#       delete, inserts the key anew (I): the key ends with I.
#
# in each order of arrival the chains allow: r1 receives r3's W and I
# before r2's Y and deletes (r1 stops applying r2 for the round) or after;
# r3 receives X first, between Y and W (after the Y and deletes that had
# seen it), or after W and V (r3 stops applying r1 for the round, or part
# of it).  Five orders per rotation (all but the one in which nothing
# arrives out of order).
#
# The links are then resumed, and every region applies everything
# (fences, CosmosRep::Converge::quiesce).  The order of arrival is forced
# by the paused links, not by timing.
use strict;
use warnings;

use CosmosRep::Converge;
use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @all = make_group(qw(a b c));
my %node = map { ($_->name => $_) } @all;

sub sql
{
	my ($r, $query) = @_;
	return $node{$r}->safe_psql('postgres', $query);
}

create_fence(\@all);
for my $node (@all)
{
	$node->safe_psql('postgres', <<'SQL');
CREATE TABLE kv (id int PRIMARY KEY, val text NOT NULL);
-- keeps existing, as a resolver with "ties keep existing" does on a tie
CREATE FUNCTION keep_existing(incoming kv, existing kv, is_tombstone boolean, conflicting kv[])
RETURNS kv LANGUAGE plpgsql AS $$
BEGIN
    IF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    RETURN existing;
END
$$;
SQL
}
sql('a', q{SELECT cosmosrep.enable_table('kv', policy => 'custom', resolver => 'public.keep_existing')});
for my $node (@all)
{
	poll_until($node, q{SELECT policy FROM cosmosrep.tables WHERE table_name = 'kv'::regclass}, 'custom')
	  or die $node->name . ' did not get kv';
}

# the rows of keys $lo..$hi in region $r, "id=val@version" joined by spaces
sub rows
{
	my ($r, $lo, $hi) = @_;
	return sql($r, "SELECT coalesce(string_agg(id || '=' || val || '\@' || _cr_version, ' ' ORDER BY id), '')"
		  . " FROM kv WHERE id BETWEEN $lo AND $hi");
}

# one version back from a statement that returns it, or its error (the
# test goes on: what each region ends with is asserted below)
sub version_of
{
	my ($r, $query) = @_;
	my $v = query_or_error($node{$r}, $query);
	diag("$r: $query: $v") unless $v =~ /^\d+$/;
	return $v;
}

# the keys $lo..$hi in $r as "id=val" joined by spaces, once they are
# $want (30 s at most); named $what
sub ok_holds
{
	my ($r, $lo, $hi, $want, $what) = @_;
	return ok(poll_until($node{$r},
			"SELECT string_agg(id || '=' || val, ' ' ORDER BY id) FROM kv WHERE id BETWEEN $lo AND $hi",
			$want, 30), $what)
	  || diag("  $r holds: $CosmosRep::Converge::last_value");
}

my @ROTATIONS = ([qw(a b c)], [qw(b c a)], [qw(c a b)]);
my %R3_GETS_X = (first => 'X first', between => 'X between Y and W', last => 'X after W and V');
my @ORDERS = ([qw(late last)], [qw(late between)], [qw(late first)], [qw(inorder last)],
	[qw(inorder between)]);
my $round = 0;
for my $roles (@ROTATIONS)
{
	for my $order (@ORDERS)
	{
		my ($r1, $r2, $r3) = @$roles;
		my ($o1, $o3) = @$order;
		my $base = ++$round * 100;
		my ($k1, $k2, $k3, $k4, $mark) = map { $base + $_ } 1 .. 4, 9;
		my $what = "round $round ($r1 -> $r2 -> $r3; $r1 gets "
		  . ($o1 eq 'late' ? "W before Y" : "Y before W") . "; $r3 gets $R3_GETS_X{$o3})";

		sql($r1, "INSERT INTO kv SELECT g, 'v0' FROM generate_series($k1, $k4) g");
		for my $r (qw(a b c))
		{
			poll_until($node{$r}, "SELECT count(*) FROM kv WHERE id BETWEEN $k1 AND $k4", '4')
			  or die "$r did not get the keys of $what";
		}
		pause_link($node{$r3}, $r1) unless $o3 eq 'first';
		pause_link($node{$r1}, $r2) if $o1 eq 'late';

		sql($r1, "UPDATE kv SET val = 'X' WHERE id BETWEEN $k1 AND $k4");
		ok_holds($r2, $k1, $k4, "$k1=X $k2=X $k3=X $k4=X", "$what: $r2 receives X");
		ok_holds($r3, $k1, $k4, "$k1=X $k2=X $k3=X $k4=X", "$what: $r3 receives X")
		  if $o3 eq 'first';
		sql($r2, "UPDATE kv SET val = 'Y' WHERE id IN ($k1, $k2); DELETE FROM kv WHERE id IN ($k3, $k4)");
		ok_holds($r3, $k1, $k4, "$k1=Y $k2=Y",
			"$what: $r3 applies Y and the deletes, which had seen X");
		if ($o3 eq 'between')
		{
			sql($r1, "INSERT INTO kv VALUES ($mark, 'mark')");
			resume_link($node{$r3}, $r1);
			ok(poll_until($node{$r3}, "SELECT count(*) FROM kv WHERE id = $mark", '1', 30),
				"$what: $r3 applies X once resumed");
			ok_holds($r3, $k1, $k4, "$k1=Y $k2=Y",
				"$what: $r3 keeps Y and the deletes when X, which they had seen, arrives after them");
		}
		ok_holds($r1, $k1, $k4, "$k1=Y $k2=Y", "$what: $r1 applies Y and the deletes")
		  if $o1 eq 'inorder';

		my $w1 = version_of($r3, "UPDATE kv SET val = 'W' WHERE id = $k1 RETURNING _cr_version");
		my $w2 = version_of($r3, "UPDATE kv SET val = 'W' WHERE id = $k2 RETURNING _cr_version");
		my $i4 = version_of($r3, "INSERT INTO kv VALUES ($k4, 'I') RETURNING _cr_version");
		ok(poll_until($node{$r2}, "SELECT val FROM kv WHERE id = $k2", 'W', 30),
			"$what: $r2 applies W, which had seen Y");
		my $v2 = version_of($r2, "UPDATE kv SET val = 'V' WHERE id = $k2 RETURNING _cr_version");

		# the late arrivals, forced by the paused links
		ok_holds($r1, $k1, $k4, "$k1=W $k2=W $k3=X $k4=I",
			"$what: $r1 applies W over X before Y arrives, and I over X before the delete it had seen")
		  if $o1 eq 'late';
		ok(poll_until($node{$r3}, "SELECT val FROM kv WHERE id = $k2", 'V', 30),
			"$what: $r3 applies V before X arrives")
		  if $o3 eq 'last';

		resume_link($node{$r3}, $r1) if $o3 eq 'last';
		resume_link($node{$r1}, $r2) if $o1 eq 'late';
		ok(quiesce(\@all), "$what: every region applied every write after the resume");

		my $want = "$k1=W\@$w1 $k2=V\@$v2 $k4=I\@$i4";
		for my $r (qw(a b c))
		{
			is(rows($r, $k1, $k4), $want,
				"$what: $r ends with the last write of each chain at its own version, the deleted key gone");
			is(sql($r, "SELECT count(*) FROM cosmosrep.conflicts WHERE (key->>'id')::int BETWEEN $k1 AND $k4"),
				'0', "$what: $r records no conflict for writes made after seeing each other");
		}
	}
}

ok_same_everywhere(\@all, 'kv', 'kv is identical in every region, versions included');
for my $r (qw(a b c))
{
	is(sql($r, 'SELECT count(*) FROM cosmosrep.conflicts'), '0',
		"$r records no conflict at all: every write in this test had seen the one before");
}

$_->stop for @all;
done_testing();
