# A hostile tenant against cosmosrep's views, its conflict history and its
# trigger functions.  mallory can log in and owns the schema app and its
# tables, nothing more.  She tries:
#
# - a cheap leaky function in a WHERE clause on every view that filters
#   rows by privilege: it must see nothing of tables she may not read
#   (the views are security barriers);
# - the conflicts, the feed and the tombstones of a table she may SELECT
#   but whose row-level security hides rows from her: no row or key of
#   it is shown to her, and the feed functions refuse her;
# - cosmosrep's trigger functions attached to tables of her own:
#   stamp_truncate would send a truncate that stops replication from the
#   region, stamp_row would stamp rows of a table that is not
#   multi-region, config_changed would invalidate caches and wake the
#   launcher; they refuse to run, and replication keeps streaming with
#   the regions identical.
#
# And a table owner's DDL (ALTER COLUMN TYPE, DROP COLUMN, ADD COLUMN)
# after conflicts were recorded: cosmosrep.conflicts keeps answering for
# every table and shows the old rows as they were recorded.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @nodes = make_group(qw(r1 r2));
my ($r1, $r2) = @nodes;

for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE ROLE mallory LOGIN;
		CREATE SCHEMA app AUTHORIZATION mallory;
		CREATE ROLE alice LOGIN;
		CREATE TABLE secret (id int PRIMARY KEY, v text);
		CREATE TABLE shared (id int PRIMARY KEY, owner name, v text);
		ALTER TABLE shared OWNER TO alice;
		GRANT SELECT, UPDATE ON shared TO mallory;
		CREATE TYPE mood AS ENUM ('calm', 'happy');
		CREATE TABLE shapes (id int PRIMARY KEY, v int, w text, z int, m mood DEFAULT 'calm');
		CREATE TABLE other (id int PRIMARY KEY, v text);
	});
}
$r1->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('secret');
	SELECT cosmosrep.enable_table('shared', policy => 'manual');
	SELECT cosmosrep.enable_table('shapes', policy => 'manual');
	SELECT cosmosrep.enable_table('other');
	INSERT INTO secret VALUES (1, 'original'), (424242, 'to be deleted');
	INSERT INTO shared VALUES (1, 'mallory', 'original'), (2, 'alice', 'original');
	INSERT INTO shapes VALUES (1, 10, 'w one', 100), (2, 20, 'w two', 200);
	INSERT INTO other VALUES (1, 'original');
});
wait_for_same_table(\@nodes, $_) for qw(secret shared shapes other);

# conflicts in both regions: each region updates every row while the
# other cannot see it (r2's writes are the newer ones)
partition_regions(\@nodes);
for my $node (@nodes)
{
	my $name = $node->name;
	$node->safe_psql('postgres', qq{
		UPDATE secret SET v = 'secret-$name' WHERE id = 1;
		UPDATE shared SET v = 'alice-secret-$name' WHERE id = 2;
		UPDATE shared SET v = 'mallory-$name' WHERE id = 1;
		UPDATE shapes SET v = v + 1, w = w || ' $name', z = z + 1, m = 'happy';
		UPDATE other SET v = 'other-$name';
	});
}
$r1->safe_psql('postgres', 'DELETE FROM secret WHERE id = 424242');
heal_regions(\@nodes);
wait_for_same_table(\@nodes, $_) for qw(secret shared shapes other);
for my $node (@nodes)
{
	wait_for_value($node,
		'SELECT count(DISTINCT table_name) FROM cosmosrep.conflicts', '4')
	  or die $node->name . ': the conflicts were not recorded';
}

# row-level security on alice's table, after it became multi-region:
# mallory may read her own rows of it only
for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		SET cosmosrep.ddl_replication = warn;
		CREATE POLICY own_rows ON shared USING (owner = current_user);
		ALTER TABLE shared ENABLE ROW LEVEL SECURITY;
	});
}

# mallory's leaky function: cheaper than any condition of a view, so the
# planner runs it first unless the view is a security barrier (and not
# volatile, so that it is pushed into a view that groups too)
$r1->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE FUNCTION app.leak(anyelement) RETURNS boolean
	LANGUAGE plpgsql STABLE COST 0.0000001 AS $$
	BEGIN
		RAISE NOTICE 'leak: %', $1;
		RETURN true;
	END $$;
});

# what a query prints, or its error
sub query_or_error
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	return $ret == 0 ? $stdout : $stderr;
}

# what mallory's query prints (its NOTICE lines included)
sub as_mallory
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql,
		extra_params => [ '-U', 'mallory' ]);
	return "$stdout\n$stderr";
}

#
# Leaky functions on the views
#
my %leaks = (
	conflicts => 'SELECT count(*) FROM cosmosrep.conflicts'
	  . ' WHERE app.leak(table_name) AND app.leak(remote_version)',
	conflict_feed => 'SELECT count(*) FROM cosmosrep.conflict_feed'
	  . ' WHERE app.leak(table_name) AND app.leak(kind)',
	conflict_summary => 'SELECT count(*) FROM cosmosrep.conflict_summary'
	  . ' WHERE app.leak(table_name)',
	tombstones => 'SELECT count(*) FROM cosmosrep.tombstones'
	  . ' WHERE app.leak(table_name) AND app.leak(key)',
	tables => 'SELECT count(*) FROM cosmosrep.tables WHERE app.leak(table_name)',
	verify => 'SELECT count(*) FROM cosmosrep.verify WHERE app.leak(name)',
);
for my $view (sort keys %leaks)
{
	my $out = as_mallory($r1, $leaks{$view});
	unlike($out, qr/leak: (.*(secret|shapes|other)|\(424242\))/,
		"a leaky function on cosmosrep.$view sees nothing of tables mallory may not read");
}
like(as_mallory($r1, $leaks{tables}), qr/leak: shared/,
	'the leaky function does see the table mallory may read (the test can see a leak)');

#
# Row-level security
#
my $rows_of_shared = q{
	SELECT count(*) FILTER (WHERE local_row IS NOT NULL OR remote_row IS NOT NULL
	                           OR winner_row IS NOT NULL OR key IS NOT NULL)
	       || '/' || count(*)
	  FROM cosmosrep.conflicts WHERE table_name = 'shared'::regclass};
is(as_mallory($r1, $rows_of_shared) =~ s/\s+$//r, '0/2',
	'cosmosrep.conflicts shows mallory no row or key of a table whose row-level security applies to her');
is(as_mallory($r1, q{SELECT count(*) FROM cosmosrep.conflict_feed
                      WHERE table_name = 'shared'::regclass
                        AND (local_row IS NOT NULL OR remote_row IS NOT NULL)}) =~ s/\s+$//r,
	'0', 'cosmosrep.conflict_feed shows her none of them either');
unlike(as_mallory($r1, 'SELECT local_row, remote_row, winner_row FROM cosmosrep.conflicts'),
	qr/alice-secret/, "no view shows mallory alice's hidden row");
is($r1->safe_psql('postgres', "SET ROLE alice; $rows_of_shared"), '2/2',
	'the owner, whom row-level security does not apply to, sees the rows of every entry');
my $feed_id = $r1->safe_psql('postgres', q{
	SELECT min(conflict_id) FROM cosmosrep.conflict_feed WHERE table_name = 'shared'::regclass});
my $feed_version = $r1->safe_psql('postgres',
	"SELECT local_version FROM cosmosrep.conflict_feed WHERE conflict_id = $feed_id");
like(as_mallory($r1, "SELECT cosmosrep.resolve_conflict($feed_id, $feed_version)"),
	qr/ERROR:  conflict $feed_id of table "shared" cannot be resolved under row-level security/,
	'the feed functions refuse a user whom row-level security of the table applies to');
like(as_mallory($r1, "SELECT cosmosrep.discard_conflict($feed_id)"),
	qr/cannot be resolved under row-level security/,
	'discard_conflict refuses her too');

# a tombstone's key is a row's key
$r1->safe_psql('postgres', q{
	INSERT INTO shared VALUES (7, 'alice', 'gone');
	DELETE FROM shared WHERE id = 7;
});
is(as_mallory($r1, q{SELECT count(*) || '/' || count(key) FROM cosmosrep.tombstones
                      WHERE table_name = 'shared'::regclass}) =~ s/\s+$//r,
	'1/0', 'cosmosrep.tombstones shows mallory no key of a table whose row-level security applies to her');

# an error may quote the row it rejected: a change that r1 rejects waits
# in its feed with its error, which mallory does not see
$r1->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE shared ADD CONSTRAINT not_rejected CHECK (v <> 'rejected alice-secret')});
$r2->safe_psql('postgres', "INSERT INTO shared VALUES (9, 'alice', 'rejected alice-secret')");
wait_for_value($r1, q{SELECT count(*) FROM cosmosrep.conflict_feed
                       WHERE kind = 'apply_error' AND table_name = 'shared'::regclass}, '1')
  or die 'the rejected change did not reach the feed';
is(as_mallory($r1, q{SELECT count(*) || '/' || count(error) FROM cosmosrep.conflicts
                      WHERE kind = 'apply_error'}) =~ s/\s+$//r,
	'1/0', 'mallory sees no error text of a table whose row-level security applies to her');
is($r1->safe_psql('postgres', q{SET ROLE alice;
	SELECT error FROM cosmosrep.conflicts WHERE kind = 'apply_error'}),
	'new row for relation "shared" violates check constraint "not_rejected"',
	'the owner sees the error');
$r1->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE shared DROP CONSTRAINT not_rejected;
	SET ROLE alice;
	SELECT cosmosrep.reapply_conflict(conflict_id) FROM cosmosrep.conflict_feed
	 WHERE kind = 'apply_error'});

# apply writes as the table's owner: a row arrives even where the policy,
# forced on the owner, would hide it
$r2->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE shared FORCE ROW LEVEL SECURITY');
$r1->safe_psql('postgres', "INSERT INTO shared VALUES (8, 'carol', 'arrives')");
ok(wait_for_value($r2, 'SELECT count(*) FROM shared WHERE id = 8', '1'),
	'apply writes a row that the forced policy hides from the owner');
$r2->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE shared NO FORCE ROW LEVEL SECURITY');

#
# cosmosrep's trigger functions on mallory's own tables
#
my $out = as_mallory($r1, q{
	CREATE TABLE app.mine (id int PRIMARY KEY);
	INSERT INTO app.mine VALUES (1);
	CREATE TRIGGER cosmosrep_truncate BEFORE TRUNCATE ON app.mine
		FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.stamp_truncate();
	TRUNCATE app.mine;
});
like($out,
	qr/ERROR:  cosmosrep.stamp_truncate\(\) fired on table "mine", which is not multi-region/,
	"stamp_truncate refuses to run on mallory's table");
$out = as_mallory($r1, q{
	CREATE TABLE app.lookalike (id int PRIMARY KEY, _cr_version bigint, _cr_base bigint,
	                            _cr_region smallint, _cr_config bigint);
	CREATE TRIGGER cosmosrep_stamp BEFORE INSERT OR UPDATE OR DELETE ON app.lookalike
		FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row();
	INSERT INTO app.lookalike VALUES (1, 0, 0, 0, 0);
});
like($out,
	qr/ERROR:  cosmosrep.stamp_row\(\) fired on table "lookalike", which is not multi-region/,
	"stamp_row refuses to run on mallory's table that has cosmosrep's columns");
$out = as_mallory($r1, q{
	CREATE TABLE app.config (id int);
	CREATE TRIGGER config_changed AFTER INSERT ON app.config
		FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.config_changed();
	INSERT INTO app.config VALUES (1);
});
like($out,
	qr/ERROR:  cosmosrep.config_changed\(\) fired on table "config", which does not belong to cosmosrep/,
	"config_changed refuses to run on mallory's table");
is($r1->safe_psql('postgres', q{
	SELECT count(*) FROM cosmosrep.tombstone WHERE relid IN ('app.mine'::regclass, 'app.lookalike'::regclass)}),
	'0', "no tombstone was written for mallory's tables");

# replication from r1 keeps streaming
$r1->safe_psql('postgres', "INSERT INTO other VALUES (2, 'after the attacks')");
ok(wait_for_value($r2, 'SELECT count(*) FROM other WHERE id = 2', '1'),
	'a write after the attacks reaches the other region');
ok_all_streaming(\@nodes, 'replication keeps streaming after the attacks');
wait_for_same_table(\@nodes, $_) for qw(secret shared other);

#
# Conflict rows survive the table's DDL
#
my $old_rows = q{
	SELECT string_agg(concat_ws(' ', remote_row->>'id', remote_row->>'v', remote_row->>'w',
	                            remote_row->>'z', remote_row ? 'n'),
	                  ',' ORDER BY remote_row->>'id')
	  FROM cosmosrep.conflicts WHERE table_name = 'shapes'::regclass};
my %before = map { ($_->name => query_or_error($_, $old_rows)) } @nodes;
is($before{r1}, '1 11 w one r2 101 f,2 21 w two r2 201 f',
	'the conflicts of shapes show the rows r2 wrote');

for my $node (@nodes)
{
	$node->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE shapes ALTER COLUMN z SET DEFAULT 0');
	is(query_or_error($node, $old_rows), $before{$node->name},
		$node->name . ': the rows read the same after DDL that keeps the columns');
}
for my $node (@nodes)
{
	$node->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE shapes ALTER COLUMN v TYPE text');
}
for my $node (@nodes)
{
	like(query_or_error($node, 'SELECT count(local_row) + count(remote_row) FROM cosmosrep.conflicts'),
		qr/^\d+$/, $node->name . ': cosmosrep.conflicts answers after ALTER COLUMN TYPE');
	is(query_or_error($node, $old_rows), $before{$node->name},
		$node->name . ': the old rows read as they were recorded after ALTER COLUMN TYPE');
}
for my $node (@nodes)
{
	$node->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE shapes DROP COLUMN w');
}
for my $node (@nodes)
{
	is(query_or_error($node, $old_rows), $before{$node->name},
		$node->name . ': the old rows keep the dropped column');
}
for my $node (@nodes)
{
	$node->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE shapes ADD COLUMN n int DEFAULT 5');
}
for my $node (@nodes)
{
	is(query_or_error($node, $old_rows), $before{$node->name},
		$node->name . ': the old rows have no added column');
	is(query_or_error($node, q{
		SELECT string_agg(DISTINCT table_name::text, ',' ORDER BY table_name::text)
		  FROM cosmosrep.conflicts WHERE local_row IS NOT NULL AND remote_row IS NOT NULL}),
		'other,secret,shapes,shared',
		$node->name . ': cosmosrep.conflicts shows the rows of every table after the DDL');
}

# a value whose type no longer exists reads as null
my $moods = q{
	SELECT string_agg(coalesce(remote_row->>'m', 'null') || ' ' || (remote_row ? 'm'), ',')
	  FROM cosmosrep.conflicts WHERE table_name = 'shapes'::regclass};
is(query_or_error($r1, $moods), 'happy true,happy true', 'the old rows show the enum value');
for my $node (@nodes)
{
	$node->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE shapes DROP COLUMN m; DROP TYPE mood');
}
is(query_or_error($r1, $moods), 'null true,null true',
	'a value whose type was dropped since reads as null, and the rest of the row as it was');
is(query_or_error($r1, $old_rows), $before{r1}, 'the old rows read as they were after the type was dropped');

# an entry recorded with the old columns is written as a row of the
# columns now: v read as text, w and m (whose type is gone) left out, n
# with its default
my ($old_id, $old_version, $old_key, $old_v) = split /\|/, $r1->safe_psql('postgres', q{
	SELECT conflict_id, remote_version, key->>'id', remote_row->>'v'
	  FROM cosmosrep.conflict_feed
	 WHERE conflict_id = (SELECT min(conflict_id) FROM cosmosrep.conflict_feed
	                       WHERE table_name = 'shapes'::regclass)});
$r1->safe_psql('postgres', "SELECT cosmosrep.resolve_conflict($old_id, $old_version)");
is($r1->safe_psql('postgres', "SELECT v || ' ' || n FROM shapes WHERE id = $old_key"),
	"$old_v 5",
	'resolve_conflict writes an entry recorded before the columns changed as a row of the columns now');

# conflicts recorded after the DDL read with the new columns
partition_regions(\@nodes);
for my $node (@nodes)
{
	my $name = $node->name;
	$node->safe_psql('postgres', "UPDATE shapes SET v = 'new-$name', n = 6 WHERE id = 1");
}
heal_regions(\@nodes);
wait_for_same_table(\@nodes, 'shapes');
ok(wait_for_value($r1, q{
	SELECT count(*) FROM cosmosrep.conflicts
	 WHERE table_name = 'shapes'::regclass AND remote_row->>'v' = 'new-r2'
	   AND remote_row->>'n' = '6' AND NOT remote_row ? 'w'}, '1'),
	'a conflict recorded after the DDL shows the row with the new columns');
is($r1->safe_psql('postgres', q{SELECT count(*) FROM cosmosrep.conflict_shape
                                WHERE relid = 'shapes'::regclass}), '2',
	'one shape is stored per distinct set of columns conflicts were recorded with');
ok_all_streaming(\@nodes, 'replication streams after the DDL');

done_testing();
