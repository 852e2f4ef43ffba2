# A region on a new PostgreSQL major version, as README's "Upgrading"
# says.  pg_upgrade refuses a database that has cosmosrep installed:
# cosmosrep.replicated_table and cosmosrep.policy_history hold resolvers as
# regprocedure, one of the reg* types whose OIDs pg_upgrade does not keep
# (and PostgreSQL 15 keeps neither replication slots nor origins through
# pg_upgrade).  The way that works: drain the region, remove it from the
# group, and join a new cluster in its place through another region,
# while the other regions go on writing; nothing written anywhere is lost
# or applied twice, and the regions end identical.
#
# Both clusters run PostgreSQL 15 here (the version installed): pg_upgrade
# makes the same checks between two clusters of one major version.
use strict;
use warnings;

use IPC::Run;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = "cosmosrep.apply_restart_max_delay = 1000\n";
my @nodes;
for my $name (qw(pa pb pc))
{
	my $node = new_region($name, create => !@nodes, extra_conf => $conf);
	if (@nodes)
	{
		$node->safe_psql('postgres', sprintf(
			"SELECT cosmosrep.join_region('%s', '%s', via => '%s')",
			$name, region_dsn($node), region_dsn($nodes[0])));
	}
	push @nodes, $node;
}
my ($pa, $pb, $pc) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres',
		'CREATE TABLE tally (id int PRIMARY KEY, region text, n bigint NOT NULL DEFAULT 0)');
}
$pa->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('tally');
	INSERT INTO tally (id) VALUES (1)});
ok(wait_for_value($_, 'SELECT count(*) FROM tally', '1'),
	$_->name . ': tally is multi-region') for ($pb, $pc);

# $count inserts in $node, one transaction each
my %written = map { ($_->name => 0) } @nodes;
sub write_rows
{
	my ($node, $count) = @_;
	my $name = $node->name;
	my $from = $written{$name} + 1;
	my $to = $written{$name} + $count;
	$node->safe_psql('postgres', join('', map {
		"INSERT INTO tally VALUES (" . (1000000 * {pa => 1, pb => 2, pc => 3, pb2 => 4}->{$name} + $_)
		  . ", '$name');\n" } $from .. $to));
	$written{$name} = $to;
	return;
}
write_rows($_, 20) for @nodes;

##########
# pg_upgrade refuses the region
##########
$pb->stop('fast');
my $new = PostgreSQL::Test::Cluster->new('pb_new');
$new->init(allows_streaming => 'logical');
$new->append_conf('postgresql.conf', $CosmosRep::Test::REGION_CONF);
my $bindir = `pg_config --bindir`;
chomp $bindir;
my $upgrade_dir = "$PostgreSQL::Test::Utils::tmp_check/pg_upgrade_pb";
mkdir $upgrade_dir;
my ($stdout, $stderr);
my $upgraded = IPC::Run::run(
	[ 'pg_upgrade', '--check', '-d', $pb->data_dir, '-D', $new->data_dir,
	  '-b', $bindir, '-B', $bindir, '-s', $new->host, '-p', $pb->port, '-P', $new->port ],
	'>', \$stdout, '2>', \$stderr, init => sub { chdir $upgrade_dir });
ok(!$upgraded, 'pg_upgrade --check refuses a region');
like($stdout, qr/Your installation contains one of the reg\* data types in user tables/,
	'pg_upgrade refuses it for the reg* columns of cosmosrep\'s tables');
my ($list) = $stdout =~ m{(/\S+/tables_using_reg\.txt)};
my $columns = defined $list && -f $list ? slurp_file($list) : '';
like($columns, qr/cosmosrep\.replicated_table\.resolver/,
	'the columns pg_upgrade refuses: cosmosrep.replicated_table.resolver');
like($columns, qr/cosmosrep\.policy_history\.resolver/,
	'the columns pg_upgrade refuses: cosmosrep.policy_history.resolver');
$pb->start;
# (an error shows until the link applies a transaction again)
write_rows($_, 1) for @nodes;
ok_all_streaming(\@nodes, 'every link streams again after the refused pg_upgrade');

##########
# The region drains, leaves the group, and a new cluster joins in its place
##########
my $end = $pb->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($pb->poll_query_until('postgres', qq{
		SELECT count(*) = 2 AND bool_and(confirmed_flush_lsn >= '$end')
		  FROM pg_replication_slots WHERE slot_name LIKE 'cr\\_pb\\_%'}),
	'pb: every peer confirmed everything pb wrote (its slots reached its WAL end)');
$pa->safe_psql('postgres', "SELECT cosmosrep.remove_region('pb')");
ok(wait_for_value($pc, "SELECT count(*) FROM cosmosrep.regions WHERE region_name = 'pb'", '0'),
	'pc: pb is removed from the group');
$pb->stop('fast');

# the other regions go on writing meanwhile
write_rows($pa, 10);
write_rows($pc, 10);

# the new cluster (here of the same version) takes pb's name
my $pb2 = new_region('pb2', extra_conf => $conf);
$pb2->safe_psql('postgres',
	'CREATE TABLE tally (id int PRIMARY KEY, region text, n bigint NOT NULL DEFAULT 0)');
$pb2->safe_psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('pb', '%s', via => '%s')", region_dsn($pb2), region_dsn($pa)));
@nodes = ($pa, $pb2, $pc);
$written{pb2} = 0;
write_rows($_, 10) for @nodes;
ok_all_streaming(\@nodes, 'every link streams once the new cluster joined as pb');
wait_for_same_table(\@nodes, 'tally');
is($pa->safe_psql('postgres', 'SELECT count(*) FROM tally'),
	1 + $written{pa} + $written{pb} + $written{pb2} + $written{pc},
	'every row written in every region, before, during and after the move, is there once');

done_testing();
