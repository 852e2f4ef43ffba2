# pg_upgrade of one region of a running group, as README's "Upgrading"
# says: CALL cosmosrep.prepare_upgrade() in the region, stop it, run
# pg_upgrade, start the new cluster, SELECT cosmosrep.finish_upgrade().
#
# Three regions; pa and pc go on writing (pgbench) while pb is upgraded
# with a real pg_upgrade (PostgreSQL 15 to PostgreSQL 15: the same checks
# and the same losses as between two major versions: no replication slot,
# no origin progress, no file cosmosrep keeps in the data directory, new
# function OIDs).  pb is the arbiter (failover priority 1), so the
# conflicts of the custom-policy table are resolved in pb, by the resolver
# its catalog names.  Before the upgrade pb's clock is pushed ahead of the
# wall clock, so a clock the new cluster took from the wall clock would go
# backwards.
use strict;
use warnings;

use IPC::Run;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = "cosmosrep.apply_restart_max_delay = 500\n";
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
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

# tally: rows inserted in every region; counters: rows updated everywhere
# (last writer wins); ledger: a custom policy whose resolver merges tags
my %base = (pa => 1000000, pb => 2000000, pc => 3000000);
for my $node (@nodes)
{
	$node->safe_psql('postgres', qq{
		CREATE TABLE tally (id int PRIMARY KEY, region text);
		CREATE SEQUENCE tally_id START $base{$node->name};
		CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
		CREATE TABLE ledger (id int PRIMARY KEY, tag text);
		CREATE FUNCTION merge_tags(incoming ledger, existing ledger,
		                           is_tombstone boolean, conflicting ledger[])
		RETURNS ledger LANGUAGE plpgsql AS \$\$
		BEGIN
		    IF is_tombstone OR existing IS NULL THEN
		        RETURN incoming;
		    END IF;
		    incoming.tag := 'merged:' || least(incoming.tag, existing.tag)
		                    || '+' || greatest(incoming.tag, existing.tag);
		    RETURN incoming;
		END
		\$\$;});
}
$pa->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('tally');
	SELECT cosmosrep.enable_table('counters');
	SELECT cosmosrep.enable_table('ledger', policy => 'custom', resolver => 'merge_tags');
	INSERT INTO counters SELECT g FROM generate_series(1, 20) g;
	INSERT INTO ledger VALUES (1, 'start');
	SELECT cosmosrep.set_failover_priority('pb', 1)});
for my $node ($pb, $pc)
{
	wait_for_value($node, 'SELECT count(*) FROM counters', '20');
	wait_for_value($node, 'SELECT cosmosrep.arbiter()', 'pb');
}
is($pb->safe_psql('postgres', "SELECT resolver::text FROM cosmosrep.tables WHERE table_name = 'ledger'::regclass"),
	'merge_tags(ledger,ledger,boolean,ledger[])', 'pb: ledger is resolved by merge_tags');

# pgbench in pa and pc until the end
my %writer;
for my $node ($pa, $pc)
{
	my $name = $node->name;
	my $script = "$tmp/writes_$name.sql";
	open(my $fh, '>', $script) or die "cannot write $script: $!";
	print $fh <<"SQL";
\\set id random(1, 20)
INSERT INTO tally VALUES (nextval('tally_id'), '$name');
UPDATE counters SET n = n + 1 WHERE id = :id;
SQL
	close $fh;
	$writer{$name} = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '1', '-T', '600', '-R', '40', '-f', $script,
		  $node->connstr('postgres') ],
		'>', "$tmp/pgbench_$name.log", '2>&1');
}
# one row per statement: a local update of several rows could deadlock
# with apply's
sub update_counters
{
	my ($node, $ids, $by) = @_;
	$node->safe_psql('postgres',
		join('', map { "UPDATE counters SET n = n + $by WHERE id = $_;\n" } @$ids));
	return;
}
$pb->safe_psql('postgres', q{
	INSERT INTO tally SELECT nextval('tally_id'), 'pb' FROM generate_series(1, 20)});
update_counters($pb, [ 1 .. 5 ], 100);

# pb's clock 20 s ahead of the wall clock (versions: ms << 21)
$pb->safe_psql('postgres',
	'SELECT cosmosrep.observe_version(cosmosrep.current_version() + (20000::bigint << 21))');
$pb->safe_psql('postgres', q{INSERT INTO tally VALUES (nextval('tally_id'), 'pb')});

# runs $sql in $node, returns its error (empty if none)
sub error_of
{
	my ($node, $sql) = @_;
	my ($stdout, $stderr) = ('', '');
	$node->psql('postgres', $sql, stdout => \$stdout, stderr => \$stderr,
		on_error_stop => 1);
	$stderr =~ s/^psql:<stdin>:\d+: //mg;
	return $stderr;
}

##########
# Errors of the procedure
##########
like(error_of($pb, 'SELECT cosmosrep.finish_upgrade()'),
	qr/^ERROR:  region "pb" is not prepared for an upgrade\nHINT:  Call cosmosrep.prepare_upgrade\(\) in the region before it stops for pg_upgrade\./,
	'finish_upgrade refuses a region that is not prepared');

like(error_of($pb, 'BEGIN; SELECT cosmosrep.finish_upgrade(); COMMIT;'),
	qr/^ERROR:  cosmosrep.finish_upgrade\(\) cannot run inside a transaction block/,
	'finish_upgrade refuses to run in a transaction block (its slots would wait for it)');

# pa stops applying pb: pb cannot drain
$pa->safe_psql('postgres', "SELECT cosmosrep.pause_region('pb')");
$pa->poll_query_until('postgres', q{
	SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status
	 WHERE source_region = 'pb'}) or die 'pa did not pause pb';
like(error_of($pb, "CALL cosmosrep.prepare_upgrade(timeout => '1s')"),
	qr/^ERROR:  region "pb" could not be prepared for an upgrade in time\nDETAIL:  Region "pa" has not confirmed the writes of this region up to [0-9A-F]+\/[0-9A-F]+ \(replication slot "cr_pb_pa"\)\.\nHINT:  The region refuses writes to multi-region tables until cosmosrep.finish_upgrade\(\) is called\.  Check cosmosrep.replication_status in every region, then call cosmosrep.prepare_upgrade\(\) again\./,
	'prepare_upgrade fails in time when a peer does not confirm the region\'s writes');
like(error_of($pb, q{INSERT INTO tally VALUES (nextval('tally_id'), 'pb')}),
	qr/^ERROR:  region "pb" does not accept writes to multi-region table "tally"\nDETAIL:  The region is prepared for an upgrade\.\nHINT:  Write in another region until cosmosrep.finish_upgrade\(\) has run in this one\./,
	'a region being prepared for an upgrade refuses local writes');

# finish_upgrade in the old cluster gives up the upgrade: writes resume
$pb->safe_psql('postgres', 'SELECT cosmosrep.finish_upgrade()');
is(error_of($pb, q{INSERT INTO tally VALUES (nextval('tally_id'), 'pb')}), '',
	'finish_upgrade in the region that did not stop resumes its writes');
$pa->safe_psql('postgres', "SELECT cosmosrep.resume_region('pb')");

##########
# The upgrade
##########
$pb->safe_psql('postgres', 'CALL cosmosrep.prepare_upgrade()');
like(error_of($pb, 'CALL cosmosrep.prepare_upgrade()'),
	qr/^ERROR:  region "pb" is already prepared for an upgrade\nHINT:  Stop the server and run pg_upgrade, then call cosmosrep.finish_upgrade\(\) in the new cluster; or call it here to resume without upgrading\./,
	'prepare_upgrade refuses a region that is prepared');
my $old_max = $pb->safe_psql('postgres', "SELECT max(_cr_version) FROM tally WHERE region = 'pb'");
my $saved_clock = $pb->safe_psql('postgres', 'SELECT clock FROM cosmosrep.upgrade');
my $saved_origins = $pb->safe_psql('postgres', q{
	SELECT string_agg('cosmosrep_' || r.region_name || '=' || u.remote_lsn, ',' ORDER BY r.region_name)
	  FROM cosmosrep.upgrade_origin u JOIN cosmosrep.regions r USING (region_id)});
like($saved_origins, qr{^cosmosrep_pa=[0-9A-F]+/[0-9A-F]+,cosmosrep_pc=[0-9A-F]+/[0-9A-F]+$},
	'prepare_upgrade saved how far pb applied pa and pc');
cmp_ok($saved_clock >> 8, '>=', $old_max >> 8, 'prepare_upgrade saved a clock at least pb\'s last version');
$pb->stop('fast');

my $new = PostgreSQL::Test::Cluster->new('pb_new');
$new->init(allows_streaming => 'logical');
$new->append_conf('postgresql.conf', $CosmosRep::Test::REGION_CONF . $conf);
my $bindir = `pg_config --bindir`;
chomp $bindir;
my $upgrade_dir = "$tmp/pg_upgrade_pb";
mkdir $upgrade_dir;
my ($stdout, $stderr);
my $upgraded = IPC::Run::run(
	[ 'pg_upgrade', '--link', '-d', $pb->data_dir, '-D', $new->data_dir,
	  '-b', $bindir, '-B', $bindir, '-s', $new->host, '-p', $pb->port, '-P', $new->port ],
	'>', \$stdout, '2>', \$stderr, init => sub { chdir $upgrade_dir });
ok($upgraded, 'pg_upgrade upgrades the prepared region') or diag($stdout . $stderr);

# the new cluster takes pb's place: its data directory, port and socket
rename($pb->data_dir, $pb->data_dir . '.old') or die "cannot move pb's old cluster: $!";
rename($new->data_dir, $pb->data_dir) or die "cannot move pb's new cluster: $!";
$pb->append_conf('postgresql.conf',
	sprintf("port = %d\nunix_socket_directories = '%s'\n", $pb->port, $pb->host));
$pb->start;

like(error_of($pb, q{INSERT INTO tally VALUES (nextval('tally_id'), 'pb')}),
	qr/^ERROR:  region "pb" does not accept writes to multi-region table "tally"\nDETAIL:  The region is prepared for an upgrade\./,
	'the upgraded region refuses local writes until finish_upgrade');
# the clock and the origins read in finish_upgrade's transaction: before
# apply resumes (at its commit), and with it the peers' versions, which
# are ahead too
my ($clock, $origins) = split /\|/, $pb->safe_psql('postgres', q{
	SELECT cosmosrep.current_version(),
	       (SELECT string_agg(external_id || '=' || remote_lsn, ',' ORDER BY external_id)
	          FROM pg_replication_origin_status)
	  FROM (SELECT cosmosrep.finish_upgrade()) f});
cmp_ok($clock, '>=', $saved_clock, 'after finish_upgrade the clock is not behind the old cluster\'s');
is($origins, $saved_origins, 'finish_upgrade restored how far pb had applied pa and pc');
is($pb->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'cr\_pb\_%'}),
	'2', 'finish_upgrade created the slot of every peer');

# pb writes again, above every version it issued before
my $last_id = $pb->safe_psql('postgres', "SELECT max(id) FROM tally WHERE region = 'pb'");
$pb->safe_psql('postgres', q{
	INSERT INTO tally SELECT nextval('tally_id'), 'pb' FROM generate_series(1, 20)});
update_counters($pb, [ 16 .. 20 ], 1000);
cmp_ok($pb->safe_psql('postgres',
		"SELECT min(_cr_version) FROM tally WHERE region = 'pb' AND id > $last_id"),
	'>', $old_max, 'pb\'s versions after the upgrade are above every version before it');
ok_all_streaming(\@nodes, 'every link streams after the upgrade');

##########
# The resolver still resolves in pb (the arbiter), by name
##########
is($pb->safe_psql('postgres', "SELECT resolver::text FROM cosmosrep.tables WHERE table_name = 'ledger'::regclass"),
	'merge_tags(ledger,ledger,boolean,ledger[])', 'pb: ledger is still resolved by merge_tags after pg_upgrade');
$pa->safe_psql('postgres', "SELECT cosmosrep.pause_region('pc')");
$pc->safe_psql('postgres', "SELECT cosmosrep.pause_region('pa')");
for ([ $pa, 'pc' ], [ $pc, 'pa' ])
{
	my ($node, $peer) = @$_;
	$node->poll_query_until('postgres', qq{
		SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status
		 WHERE source_region = '$peer'}) or die $node->name . " did not pause $peer";
}
$pa->safe_psql('postgres', "UPDATE ledger SET tag = 'a' WHERE id = 1");
$pc->safe_psql('postgres', "UPDATE ledger SET tag = 'c' WHERE id = 1");
$pa->safe_psql('postgres', "SELECT cosmosrep.resume_region('pc')");
$pc->safe_psql('postgres', "SELECT cosmosrep.resume_region('pa')");
for my $node (@nodes)
{
	ok(wait_for_value($node, 'SELECT tag FROM ledger WHERE id = 1', 'merged:a+c'),
		$node->name . ': the concurrent updates of pa and pc end merged by pb\'s resolver');
}

##########
# Nothing lost, nothing twice: the regions end identical
##########
$writer{$_}->kill_kill for sort keys %writer;
wait_for_same_table(\@nodes, $_) for qw(tally counters ledger);
for my $node (@nodes)
{
	my $name = $node->name;
	is($pa->safe_psql('postgres', "SELECT count(*) FROM tally WHERE region = '$name'"),
		$node->safe_psql('postgres', "SELECT count(*) FROM tally WHERE region = '$name'"),
		"every row $name inserted (before, during and after the upgrade) is in pa");
}

done_testing();
