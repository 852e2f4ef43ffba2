# A rolling upgrade from 0.1 to 0.2 while every region writes.
#
# Three regions start on the cosmosrep 0.1 library, built from the commit
# that shipped it (a8013aa) and run from a private copy of the PostgreSQL
# installation, and its install script (sql/released/).  Writes go on in
# every region (pgbench) while each region in turn is stopped, started on
# the 0.2 library of this tree and updated with ALTER EXTENSION cosmosrep
# UPDATE.  Regions of the two versions exchange changes both ways in
# protocol version 2 (a 0.2 apply worker asks 0.1's plugin for 3, is
# refused, and asks for 2); a region that reads no version its peer writes
# says so in replication_status, and so does the peer's old apply worker;
# after the last region the streams are in version 3 and the regions are
# identical.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Copy qw(copy);
use File::Path qw(make_path);
use IPC::Run;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $released = 'a8013aa';
my $srcdir = abs_path($ENV{srcdir} // '.');
my $tmp = abs_path($PostgreSQL::Test::Utils::tmp_check);

##########
# The 0.1 library, from the commit that shipped it
##########

# the build archives the commit (Makefile); a git checkout has it anyway
my $old_src = "$tmp/cosmosrep-0.1";
my $archive = "$srcdir/test/released-0.1.tar";
if (!-f $archive)
{
	$archive = "$tmp/released-0.1.tar";
	system("git -C '$srcdir' archive --format=tar -o '$archive' $released 2>/dev/null") == 0
	  or unlink $archive;
}
plan skip_all => "no git history: neither test/released-0.1.tar (made by the build in a git checkout) nor commit $released is here to build cosmosrep 0.1 from"
  unless -f $archive;

make_path($old_src);
system("tar -C '$old_src' -xf '$archive'") == 0 or die "cannot unpack $archive";
my $build_log = "$tmp/log/cosmosrep-0.1-build.log";
system("make -C '$old_src' -s -j2 PG_CONFIG=pg_config >'$build_log' 2>&1") == 0
  or BAIL_OUT("building cosmosrep 0.1 failed, see $build_log");

# A private copy of the PostgreSQL installation whose library directory
# holds the 0.1 library: the binaries copied (the server finds its
# library and share directories relative to itself), the libraries and
# the share directory linked (the share directory has this tree's control
# file and scripts, 0.1's install script among them).
sub pg_config
{
	my ($what) = @_;
	my $dir = `pg_config --$what`;
	chomp $dir;
	return $dir;
}
my ($bindir, $libdir, $sharedir) = map { pg_config($_) } qw(bindir pkglibdir sharedir);
my $prefix = $bindir;
$prefix = dirname($prefix)
  until index("$libdir/", "$prefix/") == 0 && index("$sharedir/", "$prefix/") == 0;
$prefix =~ s{/$}{};
my $old_root = "$tmp/pg-cosmosrep-0.1";
my ($old_bin, $old_lib, $old_share) =
  map { $old_root . substr($_, length $prefix) } ($bindir, $libdir, $sharedir);
make_path($old_lib, dirname($old_share));
system("cp -a '$bindir' '$old_bin'") == 0 or die "cannot copy $bindir";
opendir(my $dh, $libdir) or die "cannot read $libdir: $!";
for my $f (grep { !/^\.\.?$/ && $_ ne 'cosmosrep.so' } readdir $dh)
{
	symlink("$libdir/$f", "$old_lib/$f") or die "cannot link $f: $!";
}
closedir $dh;
copy("$old_src/cosmosrep.so", "$old_lib/cosmosrep.so") or die "cannot copy cosmosrep.so: $!";
symlink($sharedir, $old_share) or die "cannot link $sharedir: $!";
# PostgreSQL::Test::Cluster's install_path: the directory of bin and lib
my $old_install = dirname($old_bin);
die "$old_install has no lib directory" unless -d "$old_install/lib";

##########
# Three regions on 0.1, writing
##########

# failed apply workers start again within a second (0.1 knows the setting)
my $conf = "cosmosrep.apply_restart_max_delay = 1000\njit = off\n";
my @nodes;
for my $name (qw(ua ub uc))
{
	my $node = new_region($name, create => !@nodes, install_path => $old_install,
		version => '0.1', extra_conf => $conf);
	if (@nodes)
	{
		$node->safe_psql('postgres', sprintf(
			"SELECT cosmosrep.join_region('%s', '%s', via => '%s')",
			$name, region_dsn($node), region_dsn($nodes[0])));
	}
	push @nodes, $node;
}
my ($ua, $ub, $uc) = @nodes;

# the library a region runs, whatever its catalog
sub library_version
{
	my ($node) = @_;
	my ($ret, $out) = $node->psql('postgres', q{
		CREATE FUNCTION pg_temp.lib() RETURNS text
		  AS '$libdir/cosmosrep', 'cosmosrep_library_version' LANGUAGE C;
		SELECT pg_temp.lib()});
	return $ret == 0 ? $out : '0.1 (has no cosmosrep_library_version)';
}
is(library_version($_), '0.1 (has no cosmosrep_library_version)',
	$_->name . ' runs the 0.1 library') for @nodes;
is($_->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'cosmosrep'"),
	'0.1', $_->name . ' has the 0.1 catalog') for @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
		CREATE TABLE events (region text, k bigint, at timestamptz DEFAULT now(),
		                     PRIMARY KEY (region, k))});
}
$ua->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('counters');
	SELECT cosmosrep.enable_table('events');
	INSERT INTO counters SELECT g FROM generate_series(1, 100) g});
for my $node ($ub, $uc)
{
	ok(wait_for_value($node, 'SELECT count(*) FROM counters', '100'),
		$node->name . ': the tables enabled in ua are multi-region');
}
ok_all_streaming(\@nodes, 'every link streams on 0.1');

# pgbench in every region: counters updated everywhere (conflicts), events
# inserted with keys of the region's own
my %script;
for my $node (@nodes)
{
	my $name = $node->name;
	$script{$name} = "$tmp/upgrade_writes_$name.sql";
	open(my $fh, '>', $script{$name}) or die "cannot write $script{$name}: $!";
	print $fh <<"SQL";
\\set id random(1, 100)
\\set k random(1, 1000000000000)
UPDATE counters SET n = n + 1 WHERE id = :id;
INSERT INTO events (region, k) VALUES ('$name', :k);
SQL
	close $fh;
}

my %writer;
sub start_writes
{
	my ($node) = @_;
	my $name = $node->name;
	$writer{$name} = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '1', '-T', '600', '-R', '25',
		  '-f', $script{$name}, $node->connstr('postgres') ],
		'>>', "$tmp/log/pgbench_$name.log", '2>&1');
	return;
}
sub stop_writes
{
	my ($node) = @_;
	my $h = delete $writer{ $node->name };
	$h->kill_kill if $h;
	return;
}
start_writes($_) for @nodes;

# every region holds an event written in $from after $since (a timestamp)
sub ok_events_arrive
{
	my ($from, $since, $what) = @_;
	my $name = $from->name;
	ok(wait_for_value($from,
			"SELECT count(*) > 0 FROM events WHERE region = '$name' AND at > '$since'", 't'),
		"$name writes $what");
	for my $node (grep { $_ != $from } @nodes)
	{
		ok(wait_for_value($node,
				"SELECT count(*) > 0 FROM events WHERE region = '$name' AND at > '$since'", 't'),
			$node->name . " receives what $name writes $what");
	}
	return;
}
my $now = $ua->safe_psql('postgres', 'SELECT now()');
ok_events_arrive($_, $now, 'while every region runs 0.1') for @nodes;

# the protocol version of each stream into $node, "source:version,..."
sub protocol_versions
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT string_agg(source_region || ':' || coalesce(protocol_version::text, '-'), ','
		                  ORDER BY source_region)
		  FROM cosmosrep.replication_status});
}

##########
# One region at a time: stop, start on 0.2, ALTER EXTENSION UPDATE
##########

# the protocol version each upgraded region streams in from each other
# region once it is updated: 3 from a region on 0.2, 2 from one on 0.1
my %expected_versions = (
	ua => 'ub:2,uc:2',
	ub => 'ua:3,uc:2',
	uc => 'ua:3,ub:3');
for my $node (@nodes)
{
	my $name = $node->name;

	stop_writes($node);
	$node->stop('fast');
	$node->{_install_path} = undef;    # this tree's installation
	$node->start;
	is(library_version($node), '0.2', "$name runs the 0.2 library after its restart");
	start_writes($node);

	# before ALTER EXTENSION UPDATE: the 0.2 library under the 0.1 catalog
	ok_all_streaming(\@nodes, "every link streams once $name runs 0.2 under the 0.1 catalog");
	$now = $node->safe_psql('postgres', 'SELECT now()');
	ok_events_arrive($_, $now, "once $name runs 0.2 under the 0.1 catalog") for @nodes;

	# a region already updated streams from this one in version 3 at once,
	# though this one's catalog is still 0.1's
	for my $updated (grep { $_->name lt $name } @nodes)
	{
		ok(wait_for_value($updated, "SELECT protocol_version FROM cosmosrep.replication_status WHERE source_region = '$name'", '3'),
			$updated->name . " streams from $name in protocol version 3 before $name is updated");
	}

	if ($name eq 'ua')
	{
		like(slurp_file($ua->logfile),
			qr/LOG:  region "ub" does not write cosmosrep protocol version 3, asking for version 2/,
			'ua: its apply worker logs that 0.1 region ub refused version 3 and asks for 2');
	}

	$node->safe_psql('postgres', 'ALTER EXTENSION cosmosrep UPDATE');
	is($node->safe_psql('postgres',
			"SELECT extversion FROM pg_extension WHERE extname = 'cosmosrep'"),
		'0.2', "$name has the 0.2 catalog after ALTER EXTENSION cosmosrep UPDATE");
	is($node->safe_psql('postgres', 'SELECT cosmosrep.library_version()'), '0.2',
		"$name: cosmosrep.library_version() says 0.2");
	ok(wait_for_value($node, q{
			SELECT string_agg(source_region || ':' || coalesce(protocol_version::text, '-'), ','
			                  ORDER BY source_region)
			  FROM cosmosrep.replication_status}, $expected_versions{$name}),
		"$name streams in protocol version 3 from regions on 0.2 and 2 from regions on 0.1")
	  or diag(protocol_versions($node));
	$now = $node->safe_psql('postgres', 'SELECT now()');
	ok_events_arrive($_, $now, "once $name is updated") for @nodes;

	next unless $name eq 'ua';

	##########
	# A region that will not write or read version 2 refuses the 0.1
	# regions, and they it, with an error in replication_status
	##########
	$ua->safe_psql('postgres', q{
		ALTER SYSTEM SET cosmosrep.min_protocol_version = 3;
		SELECT pg_reload_conf()});
	ok(wait_for_value($ua, 'SHOW cosmosrep.min_protocol_version', '3'),
		'ua: cosmosrep.min_protocol_version is 3');
	# every stream starts again: ua's apply workers and its walsenders
	$ua->safe_psql('postgres', q{
		SELECT pg_terminate_backend(pid) FROM (
			SELECT worker_pid AS pid FROM cosmosrep.replication_status
			UNION ALL SELECT pid FROM pg_stat_replication) p
		 WHERE pid IS NOT NULL});
	my $refused_b = q{region "ub" writes no cosmosrep protocol version this region reads (3 to 3): }
	  . q{ERROR:  cosmosrep protocol version 3 is not supported}
	  . qq{\nDETAIL:  This region speaks protocol version 2.}
	  . qq{\nHINT:  Install the same cosmosrep version in every region.}
	  . qq{\nCONTEXT:  slot "cr_ub_ua", output plugin "cosmosrep", in the startup callback};
	ok(wait_for_value($ua, q{
			SELECT state FROM cosmosrep.replication_status
			 WHERE source_region = 'ub' AND last_error LIKE 'region "ub" writes no%'}, 'error'),
		'ua: the stream from 0.1 region ub is in error when ua reads no version below 3');
	is($ua->safe_psql('postgres',
			"SELECT last_error FROM cosmosrep.replication_status WHERE source_region = 'ub'"),
		$refused_b,
		'ua: replication_status names the versions ua reads and what ub answered');
	my $refused_a = q{query on region "ua" failed: }
	  . q{ERROR:  cosmosrep protocol version 2 is not supported, this region writes versions 3 to 3}
	  . qq{\nHINT:  Upgrade cosmosrep in the region that asked, or lower cosmosrep.min_protocol_version in this region.}
	  . qq{\nCONTEXT:  slot "cr_ua_ub", output plugin "cosmosrep", in the startup callback};
	ok(wait_for_value($ub, q{
			SELECT state FROM cosmosrep.replication_status
			 WHERE source_region = 'ua' AND last_error LIKE '%is not supported%'}, 'error'),
		'ub: its 0.1 apply worker is refused by ua, which writes no version below 3');
	is($ub->safe_psql('postgres',
			"SELECT last_error FROM cosmosrep.replication_status WHERE source_region = 'ua'"),
		$refused_a,
		'ub: replication_status names the version ub asked for and those ua writes');

	# and back: both directions stream again, nothing lost (checked below)
	$ua->safe_psql('postgres', q{
		ALTER SYSTEM RESET cosmosrep.min_protocol_version;
		SELECT pg_reload_conf()});
	ok_all_streaming(\@nodes, 'every link streams again with cosmosrep.min_protocol_version back at 2');
}

##########
# Every region on 0.2: the streams in version 3, the regions identical
##########
stop_writes($_) for @nodes;
for my $node (@nodes)
{
	is(protocol_versions($node),
		join(',', map { $_->name . ':3' } grep { $_ != $node } @nodes),
		$node->name . ' streams in protocol version 3 from every region');
}
ok_all_streaming(\@nodes, 'every link streams after the rolling upgrade');
# Rows that travelled on a version 2 link lost their _cr_seen (0.1 has no
# such column): the rest of every row, versions included, is identical.
for my $table (qw(counters events))
{
	my $query = "SELECT count(*) || ':' || md5(coalesce(string_agg((to_jsonb(t) - '_cr_seen')::text,"
	  . " ',' ORDER BY (to_jsonb(t) - '_cr_seen')::text), '')) FROM $table t";
	my $same = 0;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (!$same && time < $deadline)
	{
		my %sums = map { ($_->safe_psql('postgres', $query) => 1) } @nodes;
		$same = keys %sums == 1;
		select(undef, undef, undef, 0.2) unless $same;
	}
	ok($same, "$table is identical in every region but for _cr_seen");
}
# about 25 a second in each region, throughout
for my $node (@nodes)
{
	my $name = $node->name;
	cmp_ok($ua->safe_psql('postgres', "SELECT count(*) FROM events WHERE region = '$name'"),
		'>', 100, "$name wrote throughout the upgrade (more than 100 events)");
}

done_testing();
