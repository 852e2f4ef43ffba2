# Failover priorities reach every region, and cosmosrep.connection_string
# orders the regions by them (a preferred region first) into one libpq
# connection string, so that a client carries on against the next region
# when the first one stops, the way Cosmos DB's preferred regions do.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(a b c));
my ($ra, $rb, $rc) = @nodes;

$ra->safe_psql('postgres', q{
	SELECT cosmosrep.set_failover_priority('b', 1);
	SELECT cosmosrep.set_failover_priority('c', 2);
	SELECT cosmosrep.set_failover_priority('a', 3);
});
for my $node (@nodes)
{
	ok($node->poll_query_until('postgres', q{
		SELECT string_agg(region_name || failover_priority, ',' ORDER BY failover_priority)
		  FROM cosmosrep.regions}, 'b1,c2,a3'),
		$node->name . ': the priorities reach every region');
}

# bad input changes nothing
my ($ret, $out, $err) = $rc->psql('postgres', "SELECT cosmosrep.set_failover_priority('a', 1)");
like($err, qr/ERROR:  region "b" already has failover priority 1/,
	'a priority another region has is refused');
($ret, $out, $err) = $rc->psql('postgres', "SELECT cosmosrep.set_failover_priority('a', 0)");
like($err, qr/ERROR:  failover priority must be at least 1/, 'priority 0 is refused');
($ret, $out, $err) = $rc->psql('postgres', "SELECT cosmosrep.set_failover_priority('nowhere', 4)");
like($err, qr/ERROR:  region "nowhere" does not exist/, 'an unknown region is refused');
($ret, $out, $err) = $rc->psql('postgres', "SELECT cosmosrep.connection_string('nowhere')");
like($err, qr/ERROR:  region "nowhere" does not exist/,
	'an unknown preferred region is refused');
is($rc->safe_psql('postgres',
		"SELECT string_agg(region_name || failover_priority, ',' ORDER BY failover_priority) FROM cosmosrep.regions"),
	'b1,c2,a3', 'refused changes leave the priorities as they were');

# the connection string lists the regions by priority
my $ports = join(',', map { $_->port } ($rb, $rc, $ra));
my $connstr = $rc->safe_psql('postgres', 'SELECT cosmosrep.connection_string()');
like($connstr, qr/ port=$ports dbname=postgres target_session_attrs=read-write$/,
	'the connection string orders the regions by failover priority');
like($rc->safe_psql('postgres', "SELECT cosmosrep.connection_string('c')"),
	qr/ port=@{[ $rc->port ]},@{[ $rb->port ]},@{[ $ra->port ]} /,
	'a preferred region comes first');
unlike($connstr, qr/password/, 'the connection string carries no credentials');

# a client on it connects to the first region, and to the next once that stops
sub region_of
{
	my ($cs) = @_;
	my ($stdout, $stderr);
	IPC::Run::run(['psql', '-X', '-A', '-t', '-d', $cs, '-c',
			'SELECT region_name FROM cosmosrep.regions WHERE is_local'],
		'>', \$stdout, '2>', \$stderr);
	chomp $stdout;
	return $stdout;
}
is(region_of($connstr), 'b', 'the client connects to the region with priority 1');
$rb->stop;
is(region_of($connstr), 'c', 'with that region stopped, the client carries on against priority 2');

$_->stop for ($ra, $rc);
done_testing();
