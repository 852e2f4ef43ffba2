# Issue 23 item 4: every write's version is higher than every version it
# replaced, in its own region too.  An INSERT stamped before a concurrent
# DELETE of the same key in the same region, which then waits for that
# delete to commit, must not commit with the lower version (one region
# would keep the row, the others drop it as older than the tombstone).
# Either outcome is right: the insert is re-stamped newer than the delete
# and commits, or it is refused with an error the application can retry
# (SQLSTATE 40001), and the retry commits.  Either way the row must end
# the same in every region.
#
# The race is forced: the application's BEFORE INSERT trigger
# (zz_app_slow, which fires after cosmosrep's cosmosrep_stamp: triggers
# fire in name order) sleeps 0.5 s, only in the racing session; the test
# waits until the insert sleeps, then deletes the key in another session
# of the same region, in one of two ways (alternately):
#
#   waits      the delete's transaction stays open until the insert waits
#              for it (a lock wait), then commits;
#   committed  the delete commits while the insert still sleeps.
#
# An attempt where the insert did not reach that point (it failed on the
# key still present, or woke before the delete committed) is counted as
# missed, not judged.
#
# First with two regions (a, b), each racing in turn, then with c joined,
# racing in each of the three.
use strict;
use warnings;

use CosmosRep::Converge;
use CosmosRep::Test;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $ATTEMPTS = 4;    # per racing region and phase

my $SCHEMA = <<'SQL';
CREATE TABLE items (id int PRIMARY KEY, val text NOT NULL);
CREATE TABLE fence (round int, region text, PRIMARY KEY (round, region));
CREATE FUNCTION app_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.current_setting('app.slow', true) = 'on' THEN
        PERFORM pg_catalog.pg_sleep(0.5);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER zz_app_slow BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION app_slow();
SQL

my ($ra, $rb) = make_group(qw(a b));
$_->safe_psql('postgres', $SCHEMA) for ($ra, $rb);
$ra->safe_psql('postgres', q{SELECT cosmosrep.enable_table('items'); SELECT cosmosrep.enable_table('fence')});
for my $node ($ra, $rb)
{
	poll_until($node, 'SELECT count(*) FROM cosmosrep.tables', '2')
	  or die $node->name . ' did not get the tables';
}
is($ra->safe_psql('postgres', q{
		SELECT string_agg(tgname, ',' ORDER BY tgname COLLATE "C") FROM pg_trigger
		 WHERE tgrelid = 'items'::regclass AND NOT tgisinternal
		   AND tgtype & 2 <> 0 AND tgtype & 4 <> 0}),
	'cosmosrep_stamp,zz_app_slow',
	'the application\'s BEFORE INSERT trigger fires after cosmosrep\'s (name order)');

# a fast poll of $query on $node until it returns $want ($seconds at most)
sub fast_poll
{
	my ($node, $query, $want, $seconds) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		return 1 if query_or_error($node, $query) eq $want;
		select(undef, undef, undef, 0.02);
	}
	return 0;
}

# race($node, $key, $mode): one attempt in region $node; returns
# "inserted", "refused then inserted", "missed" or "failed: <error>"
sub race
{
	my ($node, $key, $mode, @nodes) = @_;

	$node->safe_psql('postgres', "INSERT INTO items VALUES ($key, 'old')");
	for my $n (@nodes)
	{
		poll_until($n, "SELECT count(*) FROM items WHERE id = $key", '1')
		  or die $n->name . " did not get key $key";
	}

	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose',
			'-h', $node->host, '-p', $node->port, '-d', 'postgres',
			'-c', "SET application_name = 'racer_$key'", '-c', "SET app.slow = 'on'",
			'-c', "INSERT INTO items VALUES ($key, 'new')"
		],
		'>', \$out, '2>', \$err);
	my $activity = "SELECT coalesce((SELECT wait_event FROM pg_stat_activity"
	  . " WHERE application_name = 'racer_$key'), 'gone')";
	fast_poll($node, $activity, 'PgSleep', 30)
	  or die "the racing insert of key $key did not reach its trigger's sleep";

	my $waited;
	if ($mode eq 'waits')
	{
		my $deleter = $node->background_psql('postgres');
		$deleter->query_safe("BEGIN");
		$deleter->query_safe("DELETE FROM items WHERE id = $key");
		$waited = fast_poll($node,
			"SELECT coalesce((SELECT wait_event_type FROM pg_stat_activity"
			  . " WHERE application_name = 'racer_$key'), 'gone')", 'Lock', 10);
		$deleter->query_safe("COMMIT");
		$deleter->quit;
	}
	else
	{
		$node->safe_psql('postgres', "DELETE FROM items WHERE id = $key");
		$waited = query_or_error($node, $activity) eq 'PgSleep';
	}
	$h->finish;

	return 'missed' unless $waited;
	return 'inserted' if $err !~ /ERROR/;
	if ($err =~ /ERROR:\s+40001/)
	{
		my ($ret, $o, $e) = $node->psql('postgres', "INSERT INTO items VALUES ($key, 'new')");
		return $ret == 0 ? 'refused then inserted' : "failed on retry: $e";
	}
	$err =~ s/\n.*//s;
	return "failed: $err";
}

my $key = 0;

sub phase
{
	my ($what, @nodes) = @_;
	my %outcome;
	my %hits;
	for my $node (@nodes)
	{
		for my $i (1 .. $ATTEMPTS)
		{
			my $k = ++$key;
			my $mode = $i % 2 ? 'waits' : 'committed';
			$outcome{$k} = race($node, $k, $mode, @nodes);
			diag("$what: key $k raced in " . $node->name . " ($mode): $outcome{$k}");
			$hits{ $node->name . " $mode" }++ if $outcome{$k} ne 'missed';
		}
	}
	for my $node (@nodes)
	{
		cmp_ok($hits{ $node->name . ' waits' } // 0, '>=', 1,
			"$what: in " . $node->name . ', an insert stamped before a delete of its key waited for it');
		cmp_ok($hits{ $node->name . ' committed' } // 0, '>=', 1,
			"$what: in " . $node->name . ', a delete of its key committed while an insert stamped before it slept');
	}
	my @failed = grep { $outcome{$_} =~ /^failed/ } sort { $a <=> $b } keys %outcome;
	is(scalar(@failed), 0,
		"$what: every racing insert commits (re-stamped) or is refused with SQLSTATE 40001 and then commits on retry")
	  or diag(join("\n", map { "  key $_: $outcome{$_}" } @failed));

	ok(quiesce(\@nodes), "$what: every region applied every other region's writes");
	ok_same_everywhere(\@nodes, 'items', "$what: items is identical in every region, versions included");
	my @won = grep { $outcome{$_} =~ /inserted$/ } sort { $a <=> $b } keys %outcome;
	my $list = join(',', @won) || '0';
	for my $node (@nodes)
	{
		is($node->safe_psql('postgres',
				"SELECT count(*) FROM items WHERE id IN ($list) AND val = 'new'"),
			scalar(@won),
			"$what: " . $node->name . ' holds every insert that committed after the delete of its key');
	}
	return;
}

phase('two regions', $ra, $rb);

# c joins; then three regions
my $rc = new_region('c');
$rc->safe_psql('postgres', $SCHEMA);
$rc->safe_psql('postgres', sprintf("SELECT cosmosrep.join_region('c', '%s', via => '%s')",
		region_dsn($rc), region_dsn($ra)));
for my $node ($ra, $rb)
{
	poll_until($node, 'SELECT count(*) FROM cosmosrep.regions', '3')
	  or die $node->name . ' does not list c';
}
ok_all_streaming([ $ra, $rb, $rc ], 'streams from every region once c has joined');
phase('three regions', $ra, $rb, $rc);

$_->stop for ($ra, $rb, $rc);
done_testing();
