# CosmosRep::Test: the multi-region test harness.
#
# Creates, starts and stops PostgreSQL instances ("regions") on loopback
# ports in a temporary directory, with the settings cosmosrep needs, on top
# of PostgreSQL's own PostgreSQL::Test::Cluster.  Tests use only these
# helpers to build regions, wait for conditions and compare tables.

package CosmosRep::Test;

use strict;
use warnings;

use Exporter 'import';
use CosmosRep::Relay;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  new_region
  region_dsn
  set_link_delay
  create_link_role
  crash_region
  make_group
  wait_for_same_table
  table_checksum
  wait_for_value
  partition_regions
  heal_regions
  ok_all_streaming
  wait_for_policies
);

# The settings every region needs.  output_plugin_libraries must name
# cosmosrep since PostgreSQL 15.19.
our $REGION_CONF = <<'CONF';
shared_preload_libraries = 'cosmosrep'
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
max_worker_processes = 24
output_plugin_libraries = 'pgoutput, test_decoding, cosmosrep'
synchronous_commit = on
log_min_messages = info
log_statement = none
CONF

# The role other regions connect as (README, "Security"): LOGIN and
# REPLICATION, never a superuser, with what cosmosrep.grant_link_role
# grants.  region_dsn names it unless told otherwise, so every
# multi-region test runs with it.  PostgreSQL::Test::Cluster's pg_hba.conf
# trusts every local connection, replication ones included.
our $LINK_ROLE = 'cosmosrep_link';

# create_link_role($node, $role, $attributes): the link role of README's
# "Security" section in $node (attributes default to LOGIN REPLICATION),
# granted what cosmosrep.grant_link_role grants in database "postgres".
sub create_link_role
{
	my ($node, $role, $attributes) = @_;
	$role //= $LINK_ROLE;
	$attributes //= 'LOGIN REPLICATION';
	$node->safe_psql('postgres',
		"CREATE ROLE $role $attributes; SELECT cosmosrep.grant_link_role('$role')");
	return;
}

# new_region($name, %opts): a started instance with cosmosrep installed in
# database "postgres" and the link role created.  With create => 1 the
# database is made the first region of a group under $name; with
# link_role => 0 no link role is created.  install_path => $dir runs the
# instance from another installation (PostgreSQL::Test::Cluster's option),
# version => '0.1' installs that version of the extension.
sub new_region
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name,
		$opts{install_path} ? (install_path => $opts{install_path}) : ());

	$node->init(allows_streaming => 'logical');
	$node->append_conf('postgresql.conf', $REGION_CONF);
	$node->append_conf('postgresql.conf', $opts{extra_conf})
	  if defined $opts{extra_conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION cosmosrep'
		  . ($opts{version} ? " VERSION '$opts{version}'" : ''));
	create_link_role($node) if $opts{link_role} // 1;
	if ($opts{create})
	{
		my $dsn = region_dsn($node);
		$node->safe_psql('postgres',
			"SELECT cosmosrep.create_region('$name', '$dsn')");
	}
	return $node;
}

# crash_region($node): kill -9 the postmaster of $node, wait until its
# orphaned children are gone, and start it again (crash recovery).
sub crash_region
{
	my ($node) = @_;
	my $pm = $node->{_pid};
	my @children;

	opendir(my $proc, '/proc') or die "cannot read /proc: $!";
	for my $pid (grep { /^\d+$/ } readdir $proc)
	{
		open(my $fh, '<', "/proc/$pid/stat") or next;
		my $stat = <$fh>;
		close $fh;
		# field 4, after the parenthesised command name, is the parent pid
		push @children, $pid if $stat =~ /\)\s+\S+\s+(\d+)/ && $1 == $pm;
	}
	closedir $proc;

	$node->kill9;
	for (1 .. 600)
	{
		last unless grep { kill(0, $_) } @children;
		select(undef, undef, undef, 0.1);
	}
	$node->start;
	return;
}

# make_group(@names): one started region per name; the first creates the
# group, the others join it through the first, one after another.
sub make_group
{
	my @names = @_;
	my @nodes;

	for my $name (@names)
	{
		my $node = new_region($name, create => !@nodes);
		if (@nodes)
		{
			$node->safe_psql('postgres', sprintf(
				"SELECT cosmosrep.join_region('%s', '%s', via => '%s')",
				$name, region_dsn($node), region_dsn($nodes[0])));
		}
		push @nodes, $node;
	}
	return @nodes;
}

# wait_for_same_table(\@nodes, $table): poll until the ordered checksum
# of $table is the same in every region; true when it is.
sub wait_for_same_table
{
	my ($nodes, $table) = @_;
	my $first = $nodes->[0];
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;

	while (time < $deadline)
	{
		my %sums = map { (table_checksum($_, $table) => 1) } @$nodes;
		return ok(1, "$table is identical in every region")
		  if keys %sums == 1;
		select(undef, undef, undef, 0.2);
	}
	my $detail = join(', ', map { $_->name . '=' . table_checksum($_, $table) } @$nodes);
	return ok(0, "$table is identical in every region ($detail)");
}

# The libpq connection string other regions use to reach $node, as the
# link role; user => '' leaves the user out (the bootstrap superuser, for
# the few tests that must connect as it), user => $role names another.
#
# With $CosmosRep::Test::LINK_DELAY_MS set (before the group is made), the
# string reaches $node through a relay on loopback that holds each
# direction's bytes that long (CosmosRep::Relay): every link into $node is
# that far away.
our $LINK_DELAY_MS = 0;
my %relay_port;

sub region_dsn
{
	my ($node, $dbname, %opts) = @_;
	$dbname //= 'postgres';
	my $user = $opts{user} // $LINK_ROLE;
	my ($host, $port) = ($node->host, $node->port);
	if ($LINK_DELAY_MS > 0 && $user ne '')
	{
		$relay_port{ $node->name } //= CosmosRep::Relay::start_relay(
			"$host/.s.PGSQL.$port", $LINK_DELAY_MS);
		($host, $port) = ('127.0.0.1', $relay_port{ $node->name });
	}
	return sprintf('host=%s port=%d dbname=%s%s',
		$host, $port, $dbname, $user eq '' ? '' : " user=$user");
}

# set_link_delay($node, $delay_ms): every link into $node (its relay, which
# LINK_DELAY_MS put there) holds each direction's bytes $delay_ms from
# now on: the link slows down or recovers.  Bytes already on their way
# keep their time.
sub set_link_delay
{
	my ($node, $delay_ms) = @_;
	my $port = $relay_port{ $node->name }
	  or die 'no relay in front of ' . $node->name . ' (set LINK_DELAY_MS before the group is made)';
	CosmosRep::Relay::set_relay_delay($port, $delay_ms);
	return;
}

# An ordered checksum of a whole table: equal on two regions if and only
# if they hold the same rows (all columns, cosmosrep's included).
sub table_checksum
{
	my ($node, $table, $dbname) = @_;
	$dbname //= 'postgres';
	return $node->safe_psql($dbname,
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"
		  . " FROM $table t");
}

# partition_regions(\@nodes): every region stops applying every other
# one's changes (both directions of every link paused); returns once
# every apply worker is gone.
sub partition_regions
{
	my ($nodes) = @_;
	my $peers = @$nodes - 1;

	for my $node (@$nodes)
	{
		$node->safe_psql('postgres', join(';',
				map { "SELECT cosmosrep.pause_region('" . $_->name . "')" }
				grep { $_ != $node } @$nodes));
	}
	for my $node (@$nodes)
	{
		$node->poll_query_until('postgres',
			"SELECT count(*) = $peers AND bool_and(state = 'paused' AND worker_pid IS NULL)"
			  . ' FROM cosmosrep.replication_status')
		  or die $node->name . ' did not pause';
	}
	return;
}

# heal_regions(\@nodes): every region resumes applying every other one
# (the inverse of partition_regions); returns at once.
sub heal_regions
{
	my ($nodes) = @_;

	for my $node (@$nodes)
	{
		$node->safe_psql('postgres', join(';',
				map { "SELECT cosmosrep.resume_region('" . $_->name . "')" }
				grep { $_ != $node } @$nodes));
	}
	return;
}

# wait_for_policies($node, $expected): the multi-region tables of $node
# with their policies, one "table|policy|path|resolver" line each ordered
# by name, once they are $expected (or at the timeout)
sub wait_for_policies
{
	my ($node, $expected) = @_;
	my $query = q{
		SELECT string_agg(concat_ws('|', table_name, policy, coalesce(path, ''),
		                            coalesce(resolver::text, '')),
		                  E'\n' ORDER BY table_name::text)
		  FROM cosmosrep.tables};

	$node->poll_query_until('postgres', $query, $expected);
	return $node->safe_psql('postgres', $query);
}

# ok_all_streaming(\@nodes, $what): one assertion per region that every
# link into it streams with no error, named "<region>: $what"; the links'
# states and errors are shown when it fails.
sub ok_all_streaming
{
	my ($nodes, $what) = @_;
	my $peers = @$nodes - 1;

	for my $node (@$nodes)
	{
		ok($node->poll_query_until('postgres',
				"SELECT count(*) = $peers AND bool_and(state = 'streaming' AND last_error IS NULL)"
				  . ' FROM cosmosrep.replication_status'),
			$node->name . ": $what")
		  or diag($node->safe_psql('postgres',
				'SELECT source_region, state, last_error FROM cosmosrep.replication_status'));
	}
	return;
}

# Poll $query on $node until it returns $expected (at most the default
# PostgreSQL::Test::Utils timeout); returns true when it did.
sub wait_for_value
{
	my ($node, $query, $expected, $dbname) = @_;
	$dbname //= 'postgres';
	return $node->poll_query_until($dbname, $query, $expected);
}

1;
