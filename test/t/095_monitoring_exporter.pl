# The monitoring files in monitoring/, with the real tools (Debian
# packages prometheus-postgres-exporter and prometheus, from test/setup):
# 1. prometheus-postgres-exporter with monitoring/postgres_exporter.yaml,
#    connected to region b of a group of two, after a real conflict
#    (the same new key inserted in both regions while they were
#    partitioned), as a role whose only privilege is SELECT on the
#    multi-region table, exports every metric that
#    monitoring/README.md documents, with its type and labels and values
#    that match cosmosrep.replication_status, cosmosrep.conflict_summary
#    and cosmosrep.conflicts, and no others, named as promtool check
#    metrics wants, and reports no query error; without that privilege
#    it reports no error but no conflict of the table either;
# 2. a query that fails does show as a scrape error, so the check of 1
#    can fail;
# 3. promtool accepts monitoring/alerts.yml, its unit tests pass, and the
#    rules use only metrics the exporter yields.
# Without the two packages the test is skipped, except under CI.
use strict;
use warnings;

use CosmosRep::Test;
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $EXPORTER = '/usr/bin/prometheus-postgres-exporter';
my $PROMTOOL = '/usr/bin/promtool';
my $MONITORING = File::Spec->rel2abs(dirname(__FILE__) . '/../../monitoring');
my $QUERIES = "$MONITORING/postgres_exporter.yaml";

my @missing = grep { !-x $_ } ($EXPORTER, $PROMTOOL);
if (@missing)
{
	plan skip_all => "not installed: @missing (test/setup installs them)"
	  unless $ENV{CI};
	fail("not installed: @missing (test/setup installs them)");
	done_testing();
	exit;
}

# every exporter started here is killed at the end, also when the test dies
my @exporters;

END
{
	local $?;
	for my $h (@exporters)
	{
		eval { $h->kill_kill(grace => 5) };
	}
}

# start_exporter($queries, $dsn, $tag): the exporter on a free loopback
# port with the queries file $queries and only its metrics; returns the
# harness, the metrics URL and the log file, once it answers
sub start_exporter
{
	my ($queries, $dsn, $tag) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $log = "$PostgreSQL::Test::Utils::log_path/095_exporter_$tag.log";
	my $url = "http://127.0.0.1:$port/metrics";

	local $ENV{DATA_SOURCE_NAME} = $dsn;
	my $h = IPC::Run::start(
		[
			$EXPORTER,
			"--web.listen-address=127.0.0.1:$port",
			"--extend.query-path=$queries",
			'--disable-default-metrics',
			'--disable-settings-metrics',
			'--no-collector.database',
			'--no-collector.bgwriter',
		],
		'<', \undef, '>', $log, '2>&1');
	push @exporters, $h;

	my $http = HTTP::Tiny->new(timeout => 5);
	for (1 .. 100)
	{
		last if $http->get("http://127.0.0.1:$port/")->{success};
		die "the exporter ($tag) exited:\n" . slurp_file($log)
		  unless $h->pumpable;
		select(undef, undef, undef, 0.1);
	}
	return ($h, $url, $log);
}

# scrape($url): the response, and its samples as
# { name => [ { labels => {...}, value => number } ... ] } and its TYPE lines
sub scrape
{
	my ($url) = @_;
	my $res = HTTP::Tiny->new(timeout => 30)->get($url);
	my (%samples, %types);

	for my $line (split /\n/, $res->{content} // '')
	{
		if ($line =~ /^# TYPE (\S+) (\S+)/)
		{
			$types{$1} = $2;
			next;
		}
		next if $line =~ /^#/ || $line !~ /\S/;
		$line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/
		  or die "cannot parse the metrics line: $line";
		my ($name, $labels, $value) = ($1, $2 // '', $3);
		my %labels;
		$labels{$1} = $2 while $labels =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
		push @{ $samples{$name} }, { labels => \%labels, value => $value };
	}
	return ($res, \%samples, \%types);
}

# the value of the one sample of $name whose labels include %match
sub sample_value
{
	my ($samples, $name, %match) = @_;
	my @found = grep {
		my $l = $_->{labels};
		!grep { ($l->{$_} // "\0") ne $match{$_} } keys %match
	} @{ $samples->{$name} // [] };
	return @found == 1 ? $found[0]{value} : undef;
}

# write_file($path, $text): $path holds $text
sub write_file
{
	my ($path, $text) = @_;
	open(my $fh, '>', $path) or die "cannot write $path: $!";
	print $fh $text;
	close($fh) or die "cannot write $path: $!";
	return;
}

sub is_number
{
	my ($v) = @_;
	return defined $v && $v =~ /^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;
}

##########
# Two regions with replicated rows
##########

my ($ra, $rb) = make_group(qw(a b));
for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY, v text)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('items')");
$rb->poll_query_until('postgres', 'SELECT count(*) = 1 FROM cosmosrep.tables')
  or die 'enabling items did not reach b';

# five transactions of ten rows in a, one of three rows in b
for my $i (0 .. 4)
{
	$ra->safe_psql('postgres', sprintf(
		"INSERT INTO items SELECT g, 'a' FROM generate_series(%d, %d) g",
		10 * $i + 1, 10 * $i + 10));
}
$rb->safe_psql('postgres', "INSERT INTO items SELECT g, 'b' FROM generate_series(101, 103) g");
wait_for_same_table([ $ra, $rb ], 'items');
ok(wait_for_value($rb, q{
		SELECT state = 'streaming' AND lag_bytes = 0 AND transactions_applied >= 5
		  FROM cosmosrep.replication_status WHERE source_region = 'a'}, 't'),
	'b streams from a, caught up, after five transactions');

# a conflict: a and b partitioned, the same new key inserted in a, then
# in b (the newer write, which wins), then the partition heals
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
for my $node ($ra, $rb)
{
	ok(wait_for_value($node, q{
			SELECT bool_and(state = 'paused' AND worker_pid IS NULL)
			  FROM cosmosrep.replication_status}, 't'),
		$node->name . ' pauses replication from the other region');
}
$ra->safe_psql('postgres', "INSERT INTO items VALUES (1000, 'a')");
$rb->safe_psql('postgres', "INSERT INTO items VALUES (1000, 'b')");
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
wait_for_same_table([ $ra, $rb ], 'items');
is($rb->safe_psql('postgres', 'SELECT v FROM items WHERE id = 1000'), 'b',
	'the newer insert of the key wins in both regions');
ok(wait_for_value($rb, q{
		SELECT state = 'streaming' AND lag_bytes = 0 AND conflicts = 1
		  FROM cosmosrep.replication_status WHERE source_region = 'a'}, 't'),
	'b streams from a again, caught up, and counts one conflict from a');
is($rb->safe_psql('postgres', q{
		SELECT string_agg(format('%s %s %s>%s', table_name, kind, remote_region, local_region),
		                  ',' ORDER BY conflict_id)
		  FROM cosmosrep.conflicts}),
	'items insert_exists a>b', 'b records one insert_exists conflict of items');

##########
# 1. The exporter on region b
##########

# the metrics monitoring/README.md documents: | `name` | type | labels | ... |
my %documented;
{
	my $section = '';
	for my $line (split /\n/, slurp_file("$MONITORING/README.md"))
	{
		$section = $1 if $line =~ /^## (.*)/;
		next unless $section eq 'Metrics';
		$documented{$1} = { type => $2, labels => [ split /,\s*/, $3 ] }
		  if $line =~ /^\| `(\w+)` \| (\w+) \| ([\w, ]+?) \|/;
	}
}
cmp_ok(scalar(keys %documented), '>=', 10,
	'monitoring/README.md documents the metrics in a table under "Metrics"');

# a role without privileges reads replication_status, but the conflict
# views show it only the tables it may read
$rb->safe_psql('postgres', 'CREATE ROLE monitor LOGIN');
my $dsn = sprintf('host=%s port=%d dbname=postgres user=monitor sslmode=disable',
	$rb->host, $rb->port);
my ($exporter, $url, $log) = start_exporter($QUERIES, $dsn, 'b');

# scrape twice: the first after start, the second shows the state that
# the views show right after it
scrape($url);
{
	my (undef, $unprivileged) = scrape($url);
	is(sample_value($unprivileged, 'pg_exporter_last_scrape_error'), '0',
		'without SELECT on items: no scrape error');
	is(sample_value($unprivileged, 'cosmosrep_replication_conflicts_total', source_region => 'a'),
		'1', 'without SELECT on items: replication_conflicts_total counts the conflict');
	ok(!$unprivileged->{cosmosrep_conflicts_recorded} && !$unprivileged->{cosmosrep_conflict_feed_depth},
		'without SELECT on items: no conflicts_recorded and no conflict_feed_depth for it');
}

# the privilege monitoring/README.md asks for
$rb->safe_psql('postgres', 'GRANT SELECT ON items TO monitor');
scrape($url);
my ($res, $samples, $types) = scrape($url);
my %view = split /[|\n]/, $rb->safe_psql('postgres', q{
	SELECT 'transactions_applied', transactions_applied,
	       'changes_applied', changes_applied,
	       'latency_p50_ms', latency_p50_ms,
	       'latency_p99_ms', latency_p99_ms,
	       'conflicts', conflicts
	  FROM cosmosrep.replication_status WHERE source_region = 'a'});
# the conflict views, as a superuser sees them: "table kind resolution=n"
# and "table=depth"
my $summary_view = join("\n", sort split /\n/, $rb->safe_psql('postgres', q{
	SELECT format('%s %s %s=%s', table_name, kind, resolution, conflicts)
	  FROM cosmosrep.conflict_summary}));
my $feed_view = join(',', sort split /\n/, $rb->safe_psql('postgres', q{
	SELECT format('%s=%s', t.table_name,
	              (SELECT count(*) FROM cosmosrep.conflicts c
	                WHERE c.table_name = t.table_name
	                  AND c.resolution IN ('pending', 'error')))
	  FROM cosmosrep.tables t}));
write_file("$PostgreSQL::Test::Utils::log_path/095_metrics_b.txt", $res->{content} // '');

is($res->{status}, 200, 'the exporter answers on 127.0.0.1 with the metrics')
  or diag "$res->{status} $res->{reason}: $res->{content}";
is(sample_value($samples, 'pg_up'), '1', 'the exporter reaches region b');
is(sample_value($samples, 'pg_exporter_last_scrape_error'), '0',
	'the exporter reports no error running the queries');
is(join(',', map { $_->{value} } @{ $samples->{pg_exporter_user_queries_load_error} // [] }),
	'0', 'the exporter loaded the queries file');
unlike(slurp_file($log), qr/level=(?:error|warn)/,
	'the exporter logs no error and no warning');

my %checks = (
	cosmosrep_replication_state => sub {
		my @pair = grep { $_->{labels}{source_region} eq 'a' }
		  @{ $samples->{cosmosrep_replication_state} };
		my %by_state = map { ($_->{labels}{state} => $_->{value}) } @pair;
		is(join(',', map { "$_=$by_state{$_}" } sort keys %by_state),
			'catching up=0,connecting=0,error=0,paused=0,stopped=0,streaming=1,unreachable=0',
			'state: 1 for streaming, 0 for every other state');
	},
	cosmosrep_replication_lag_bytes => sub {
		my $v = sample_value($samples, $_[0], source_region => 'a');
		ok(is_number($v) && $v >= 0 && $v < 16 * 1024 * 1024,
			"lag_bytes is small and not negative ($v)");
	},
	cosmosrep_replication_lag_seconds => sub {
		my $v = sample_value($samples, $_[0], source_region => 'a');
		ok(is_number($v) && $v >= 0 && $v < 60, "lag_seconds is small and not negative ($v)");
	},
	cosmosrep_replication_latency_p50_seconds => sub {
		my $v = sample_value($samples, $_[0], source_region => 'a');
		my $p99 = sample_value($samples, 'cosmosrep_replication_latency_p99_seconds',
			source_region => 'a');
		ok(is_number($v) && $v >= 0 && is_number($p99) && $v <= $p99,
			"latency_p50_seconds is not negative and at most latency_p99_seconds ($v)");
		ok(abs($v - $view{latency_p50_ms} / 1000) < 1e-9,
			"latency_p50_seconds is the view's latency_p50_ms in seconds ($view{latency_p50_ms})");
	},
	cosmosrep_replication_latency_p99_seconds => sub {
		my $v = sample_value($samples, $_[0], source_region => 'a');
		ok(is_number($v) && $v > 0 && $v < 30, "latency_p99_seconds is plausible ($v)");
		ok(abs($v - $view{latency_p99_ms} / 1000) < 1e-9,
			"latency_p99_seconds is the view's latency_p99_ms in seconds ($view{latency_p99_ms})");
	},
	cosmosrep_replication_transactions_applied_total => sub {
		my $v = sample_value($samples, $_[0], source_region => 'a');
		ok(is_number($v) && $v >= 5, "transactions_applied_total counts a's five transactions ($v)");
		is($v, $view{transactions_applied}, 'transactions_applied_total is the view\'s');
	},
	cosmosrep_replication_changes_applied_total => sub {
		my $v = sample_value($samples, $_[0], source_region => 'a');
		ok(is_number($v) && $v >= 50, "changes_applied_total counts a's fifty rows ($v)");
		is($v, $view{changes_applied}, 'changes_applied_total is the view\'s');
	},
	cosmosrep_replication_conflicts_total => sub {
		my $v = sample_value($samples, $_[0], source_region => 'a');
		is($v, '1', 'replication_conflicts_total counts the one conflict from a');
		is($v, $view{conflicts}, 'replication_conflicts_total is the view\'s');
	},
	cosmosrep_conflicts_recorded => sub {
		my $got = join("\n", sort map {
			"$_->{labels}{table} $_->{labels}{kind} $_->{labels}{resolution}=$_->{value}"
		} @{ $samples->{ $_[0] } });
		is($got, 'items insert_exists local_kept=1',
			'conflicts_recorded: one insert_exists conflict of items, which b kept');
		is($got, $summary_view, 'conflicts_recorded is cosmosrep.conflict_summary');
	},
	cosmosrep_conflict_feed_depth => sub {
		my $got = join(',', sort map { "$_->{labels}{table}=$_->{value}" }
			  @{ $samples->{ $_[0] } });
		is($got, 'items=0', 'conflict_feed_depth: 0 for items, the only multi-region table');
		is($got, $feed_view,
			'conflict_feed_depth is the count of pending and error conflicts per table');
	},
);

for my $name (sort keys %documented)
{
	my $doc = $documented{$name};
	my @s = @{ $samples->{$name} // [] };

	ok(@s, "$name is exported") or next;
	is($types->{$name}, $doc->{type}, "$name is a $doc->{type}");
	is(join(' ', sort map { join(',', sort grep { $_ ne 'server' } keys %{ $_->{labels} }) } @s),
		join(' ', (join(',', sort @{ $doc->{labels} })) x @s),
		"$name has the labels " . join(', ', @{ $doc->{labels} }));
	is(join(',', sort map { "$_->{labels}{source_region}>$_->{labels}{target_region}" } @s),
		join(',', ('a>b') x @s), "$name is about the pair a to b, the only one b has")
	  if grep { $_ eq 'source_region' } @{ $doc->{labels} };
	ok(!grep({ $_->{labels}{server} !~ /\S/ } @s), "$name has a server label");
	ok($checks{$name}, "the test checks the value of $name") or next;
	$checks{$name}->($name);
}
is(join(',', grep { /^cosmosrep_/ && !$documented{$_} } sort keys %$samples), '',
	'the exporter yields no cosmosrep metric that monitoring/README.md does not document');

# promtool's lint of metric names and help texts, on cosmosrep's metrics
{
	my $ours = join('', map { "$_\n" } grep { /^(?:# (?:HELP|TYPE) )?cosmosrep_/ }
		  split /\n/, $res->{content} // '');
	my ($out, $err);
	my $ran = IPC::Run::run([ $PROMTOOL, 'check', 'metrics' ],
		'<', \$ours, '>', \$out, '2>', \$err);
	ok($ran && $out . $err eq '', 'promtool check metrics finds nothing to say about them')
	  or diag "$out$err";
}

##########
# 2. A failing query shows
##########

my $broken = "$PostgreSQL::Test::Utils::tmp_check/095_broken_queries.yaml";
write_file($broken, <<'YAML');
cosmosrep_broken:
  query: "SELECT source_region, 1 AS value FROM cosmosrep.no_such_view"
  master: true
  metrics:
    - source_region:
        usage: "LABEL"
        description: "region"
    - value:
        usage: "GAUGE"
        description: "never"
YAML
my ($broken_exporter, $broken_url, $broken_log) = start_exporter($broken, $dsn, 'broken');
my (undef, $broken_samples) = scrape($broken_url);
is(sample_value($broken_samples, 'pg_exporter_last_scrape_error'), '1',
	'a query on a missing view makes pg_exporter_last_scrape_error 1');
like(slurp_file($broken_log), qr/level=error/, 'and the exporter logs an error');
$broken_exporter->kill_kill(grace => 5);

##########
# 3. The alert rules
##########

my ($out, $err);
my $ran = IPC::Run::run([ $PROMTOOL, 'check', 'rules', "$MONITORING/alerts.yml" ],
	'<', \undef, '>', \$out, '2>', \$err);
ok($ran, 'promtool check rules accepts monitoring/alerts.yml') or diag "$out$err";
like($out, qr/SUCCESS: [1-9]\d* rules found/, 'promtool finds the rules') or diag "$out$err";

$ran = IPC::Run::run([ $PROMTOOL, 'test', 'rules', "$MONITORING/alerts_test.yml" ],
	'<', \undef, '>', \$out, '2>', \$err);
ok($ran, 'the unit tests of the rules pass (promtool test rules)') or diag "$out$err";

my %in_rules = map { ($_ => 1) } slurp_file("$MONITORING/alerts.yml") =~ /\b(cosmosrep_\w+)/g;
ok(%in_rules, 'the rules use cosmosrep metrics');
is(join(',', grep { !$samples->{$_} } sort keys %in_rules), '',
	'every metric the rules use is one the exporter yields: ' . join(', ', sort keys %in_rules));

##########
# The exporter stops
##########

my $pid = $exporter->{KIDS}[0]{PID};
$exporter->kill_kill(grace => 5);
ok(!kill(0, $pid), 'the exporter is gone');

$_->stop for ($ra, $rb);
done_testing();
