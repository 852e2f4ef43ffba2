# CosmosRep::Converge: helpers for the convergence tests of issue 23
# (tests 110 to 113): pausing one direction of one link, fences that tell
# when every region has applied everything written before, and polls with
# a deadline of their own that do not die on an error (a function that
# does not exist yet fails the assertion that needs it, not the file).
#
# Only additions: nothing here changes CosmosRep::Test.

package CosmosRep::Converge;

use strict;
use warnings;

use Exporter 'import';
use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

our @EXPORT = qw(
  pause_link
  resume_link
  poll_until
  create_fence
  quiesce
  ok_same_everywhere
  query_or_error
);

# the deadline of poll_until and ok_same_everywhere unless told, seconds
our $POLL_SECONDS = 90;

# query_or_error($node, $query): the query's output, or "ERROR: ..." when
# it fails (never dies)
sub query_or_error
{
	my ($node, $query) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $query);
	return $out if $ret == 0;
	my ($first) = $err =~ /(ERROR:.*)/;
	return $first // "ERROR: $err";
}

# poll_until($node, $query, $expected, $seconds): poll $query on $node
# every 0.2 s until it returns $expected; true when it did, false at the
# deadline (the last answer is in $CosmosRep::Converge::last_value).
our $last_value;

sub poll_until
{
	my ($node, $query, $expected, $seconds) = @_;
	$expected //= 't';
	my $deadline = time + ($seconds // $POLL_SECONDS);
	while (1)
	{
		$last_value = query_or_error($node, $query);
		return 1 if $last_value eq $expected;
		# a function that does not exist does not appear by waiting
		return 0 if time > $deadline || $last_value =~ /^ERROR: .*function .* does not exist/;
		select(undef, undef, undef, 0.2);
	}
}

# pause_link($dst, $src): region $dst stops applying region $src's changes
# (one direction of one link); returns once $dst's worker for $src is gone
sub pause_link
{
	my ($dst, $src) = @_;
	my $name = ref $src ? $src->name : $src;
	$dst->safe_psql('postgres', "SELECT cosmosrep.pause_region('$name')");
	poll_until($dst, "SELECT state = 'paused' AND worker_pid IS NULL"
		  . " FROM cosmosrep.replication_status WHERE source_region = '$name'")
	  or die $dst->name . " did not stop applying $name: $last_value";
	return;
}

# resume_link($dst, $src): the inverse; returns once $dst streams from $src
sub resume_link
{
	my ($dst, $src) = @_;
	my $name = ref $src ? $src->name : $src;
	$dst->safe_psql('postgres', "SELECT cosmosrep.resume_region('$name')");
	poll_until($dst, "SELECT state = 'streaming'"
		  . " FROM cosmosrep.replication_status WHERE source_region = '$name'")
	  or die $dst->name . " did not resume applying $name: $last_value";
	return;
}

# create_fence(\@nodes): the multi-region table fence (round, region) in
# every region, for quiesce
sub create_fence
{
	my ($nodes) = @_;
	$_->safe_psql('postgres',
		'CREATE TABLE fence (round int, region text, PRIMARY KEY (round, region))')
	  for @$nodes;
	$nodes->[0]->safe_psql('postgres', "SELECT cosmosrep.enable_table('fence')");
	for my $node (@$nodes)
	{
		poll_until($node, "SELECT count(*) FROM cosmosrep.tables WHERE table_name = 'fence'::regclass", '1')
		  or die $node->name . ' did not get the table fence';
	}
	return;
}

# quiesce(\@nodes, $rounds): fences, $rounds of them (2 unless told): in
# each round every region writes a fence row once it holds every region's
# row of the round before, and the round ends when every region holds
# every region's row.  A stream is applied in commit order, so after one
# round every region has applied everything every other one wrote before
# the round; after the second, also what they wrote while applying the
# first (an arbiter's resolutions).  True when every round ended before
# the deadline.
my $fence_round = 0;

sub quiesce
{
	my ($nodes, $rounds) = @_;
	my $n = @$nodes;
	for (1 .. ($rounds // 2))
	{
		my $round = ++$fence_round;
		for my $node (@$nodes)
		{
			my $r = query_or_error($node,
				"INSERT INTO fence VALUES ($round, '" . $node->name . "')");
			return 0 if $r =~ /^ERROR/;
		}
		for my $node (@$nodes)
		{
			poll_until($node, "SELECT count(*) FROM fence WHERE round = $round", $n)
			  or return 0;
		}
	}
	return 1;
}

# ok_same_everywhere(\@nodes, $table, $what, $seconds): poll (30 s unless
# told: call it once quiesce has returned) until $table
# (every column, cosmosrep's included) holds the same rows in every
# region; one assertion named $what; on failure, the first rows that
# differ in each region.
sub ok_same_everywhere
{
	my ($nodes, $table, $what, $seconds) = @_;
	my $deadline = time + ($seconds // 30);
	my %sum;
	while (1)
	{
		%sum = map { ($_->name => table_checksum($_, $table)) } @$nodes;
		my %distinct = reverse %sum;
		return ok(1, $what) if keys %distinct == 1;
		last if time > $deadline;
		select(undef, undef, undef, 0.2);
	}
	ok(0, $what);
	my %rows = map {
		($_->name => { map { ($_ => 1) } split /\n/,
				$_->safe_psql('postgres', "SELECT t::text FROM $table t ORDER BY 1") })
	} @$nodes;
	for my $node (@$nodes)
	{
		my $name = $node->name;
		my @only = grep {
			my $row = $_;
			grep { !$rows{ $_->name }{$row} } @$nodes
		} sort keys %{ $rows{$name} };
		diag("$name: $sum{$name}; rows not in every region:\n  "
			  . join("\n  ", @only[ 0 .. ($#only < 5 ? $#only : 5) ]))
		  if @only;
	}
	return 0;
}

1;
