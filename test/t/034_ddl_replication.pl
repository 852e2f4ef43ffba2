# Schema changes of a multi-region table travel with its rows: each kind
# of DDL made in one region while the three regions are cut off from one
# another and keep writing (rows of the old shape in flight both ways, and
# rows of the new shape behind the change), then healed; every region ends
# with the same columns and the same rows.  Then cosmosrep.ddl_replication,
# cosmosrep.replicate_ddl, a hostile tenant's query string, conflict rows
# recorded before the changes, and DDL racing DDL.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @regions = make_group(qw(east west north));
my ($east, $west, $north) = @regions;

for my $node (@regions)
{
	$node->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY, a int, b text)');
}
$east->safe_psql('postgres', "SELECT cosmosrep.enable_table('items')");
$east->safe_psql('postgres',
	"INSERT INTO items SELECT g, g, 'seed ' || g FROM generate_series(1, 10) g");
wait_for_same_table(\@regions, 'items');

# the user columns of a table, in order, with their types
sub columns
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
		  FROM pg_attribute
		 WHERE attrelid = '$table'::regclass AND attnum > 0 AND NOT attisdropped
		   AND attname NOT LIKE '\\_cr\\_%'});
}

# A conflict recorded while the table has its first shape: west and north
# update row 1 while apart.
partition_regions(\@regions);
$west->safe_psql('postgres', "UPDATE items SET b = 'west' WHERE id = 1");
$north->safe_psql('postgres', "UPDATE items SET b = 'north' WHERE id = 1");
heal_regions(\@regions);
wait_for_same_table(\@regions, 'items');

# in_flight($what, $table, $ddl, $east_before, $east_after, $others):
# with every link paused, east writes $east_before, changes the table with
# $ddl and writes $east_after; west and north each run $others->($node)
# (writes of the old shape); then the links resume.
sub in_flight
{
	my ($what, $table, $ddl, $east_before, $east_after, $others) = @_;

	partition_regions(\@regions);
	$east->safe_psql('postgres', $east_before) if $east_before;
	$others->($_) for ($west, $north);
	$east->safe_psql('postgres', $ddl);
	$east->safe_psql('postgres', $east_after) if $east_after;
	heal_regions(\@regions);
	ok_all_streaming(\@regions, "streams again after $what");
	my $new_table = $table;
	wait_for_same_table(\@regions, $new_table);
	my $cols = columns($east, $new_table);
	is(columns($_, $new_table), $cols, $_->name . ": $what: same columns as east ($cols)")
	  for ($west, $north);
	return;
}

my %id = (west => 200, north => 300);

# fenced($what, $table, $ddl, $east_before, $east_after, $others): a
# change that checks or converts values (ddl_fence.c).  With every link
# paused, east writes $east_before and west and north write the old shape
# ($others); east's $ddl is then refused, since east has not applied
# their writes, and leaves the table and their writes as they were.  Once
# the links resume, $ddl waits for those writes, runs against them, and
# $east_after follows.
sub fenced
{
	my ($what, $table, $ddl, $east_before, $east_after, $others) = @_;

	partition_regions(\@regions);
	$east->safe_psql('postgres', $east_before) if $east_before;
	$others->($_) for ($west, $north);
	my $cols = columns($east, $table);
	my ($rc, $out, $err) = $east->psql('postgres',
		"SET cosmosrep.ddl_fence_timeout = '1s'; $ddl");
	like($err, qr/ERROR:  schema change of multi-region table "$table" timed out waiting for region "west"\n.*DETAIL:  This region has applied the changes of region "west" up to [0-9A-F\/]+, not up to [0-9A-F\/]+, where its writes of the table end\./s,
		"$what: refused while east has not applied the other regions' writes");
	is(columns($east, $table), $cols, "$what: the refused change left the table as it was");
	my $i = ++$id{west};
	is($west->safe_psql('postgres', "INSERT INTO $table (id, qty) VALUES ($i, $i) RETURNING id"),
		$i, "$what: the refused change lifted its fence in west");
	heal_regions(\@regions);
	$east->safe_psql('postgres', $ddl);
	$east->safe_psql('postgres', $east_after) if $east_after;
	ok_all_streaming(\@regions, "streams again after $what");
	wait_for_same_table(\@regions, $table);
	$cols = columns($east, $table);
	is(columns($_, $table), $cols, $_->name . ": $what: same columns as east ($cols)")
	  for ($west, $north);
	return;
}

##########
# ADD COLUMN with a default: rows of the old shape get the default
##########

in_flight('add column with a default', 'items',
	'ALTER TABLE items ADD COLUMN c int DEFAULT 7',
	"INSERT INTO items VALUES (101, 101, 'east before')",
	"INSERT INTO items (id, a, b, c) VALUES (102, 102, 'east after', 8)",
	sub {
		my $node = shift;
		my $i = ++$id{ $node->name };
		$node->safe_psql('postgres',
			"INSERT INTO items VALUES ($i, $i, 'old shape'); UPDATE items SET a = a + 1 WHERE id = 2");
	});
is($east->safe_psql('postgres', q{SELECT string_agg(id || ':' || c, ',' ORDER BY id) FROM items WHERE id IN (101, 102, 201, 301)}),
	'101:7,102:8,201:7,301:7',
	'rows of the old shape written before the change arrived take the default everywhere');

##########
# ADD COLUMN without a default
##########

in_flight('add column without a default', 'items',
	'ALTER TABLE items ADD COLUMN d text',
	"UPDATE items SET a = 0 WHERE id = 3",
	"INSERT INTO items (id, a, b, c, d) VALUES (103, 103, 'east after', 9, 'dee')",
	sub {
		my $node = shift;
		my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO items (id, a, b, c) VALUES ($i, $i, 'old shape', 70)");
	});
is($west->safe_psql('postgres', 'SELECT count(*) FROM items WHERE d IS NULL AND id IN (202, 302)'),
	'2', 'rows of the old shape have NULL in a column added without a default');

##########
# DROP COLUMN: the value of rows of the old shape is dropped
##########

in_flight('drop column', 'items',
	'ALTER TABLE items DROP COLUMN b',
	"INSERT INTO items (id, a, b, c, d) VALUES (104, 104, 'gone', 1, 'e')",
	"INSERT INTO items (id, a, c, d) VALUES (105, 105, 1, 'e')",
	sub {
		my $node = shift;
		my $i = ++$id{ $node->name };
		$node->safe_psql('postgres',
			"INSERT INTO items (id, a, b, c, d) VALUES ($i, $i, 'dropped value', 2, 'x'); UPDATE items SET b = 'changed' WHERE id = 4");
	});

##########
# RENAME COLUMN: rows of the old shape name the column by its old name
##########

in_flight('rename column', 'items',
	'ALTER TABLE items RENAME COLUMN a TO qty',
	"UPDATE items SET a = 1000 WHERE id = 5",
	"INSERT INTO items (id, qty, c, d) VALUES (106, 106, 1, 'e')",
	sub {
		my $node = shift;
		my $i = ++$id{ $node->name };
		$node->safe_psql('postgres',
			"INSERT INTO items (id, a, c, d) VALUES ($i, 4242, 3, 'x'); UPDATE items SET a = 77 WHERE id = 6");
	});
is($north->safe_psql('postgres', q{SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM items WHERE id IN (6, 204, 304)}),
	'6:77,204:4242,304:4242',
	'values written under the old column name land in the renamed column everywhere');

##########
# ALTER COLUMN TYPE
##########

fenced('change a column type', 'items',
	'ALTER TABLE items ALTER COLUMN c TYPE bigint',
	"UPDATE items SET c = 11 WHERE id = 7",
	"INSERT INTO items (id, qty, c, d) VALUES (107, 107, 5000000000, 'big')",
	sub {
		my $node = shift;
		my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO items (id, qty, c, d) VALUES ($i, $i, 12, 'int')");
	});
is(columns($west, 'items'), 'id integer, qty integer, c bigint, d text',
	'the column has its new type in every region');

##########
# Indexes and constraints
##########

in_flight('add an index', 'items',
	'CREATE INDEX items_d ON items (d)',
	undef, "INSERT INTO items (id, qty, d) VALUES (108, 108, 'indexed')",
	sub { my $node = shift; my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO items (id, qty, d) VALUES ($i, 1, 'i')"); });
fenced('add a constraint', 'items',
	'ALTER TABLE items ADD CONSTRAINT items_qty_check CHECK (qty >= 0)',
	undef, undef,
	sub { my $node = shift; my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO items (id, qty, d) VALUES ($i, 2, 'c')"); });
for my $node ($west, $north)
{
	is($node->safe_psql('postgres', q{
			SELECT (SELECT count(*) FROM pg_indexes WHERE indexname = 'items_d')
			    || ',' || (SELECT count(*) FROM pg_constraint WHERE conname = 'items_qty_check')}),
		'1,1', $node->name . ': the index and the constraint made in east exist');
}
in_flight('drop an index', 'items', 'DROP INDEX items_d', undef, undef,
	sub { my $node = shift; my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO items (id, qty, d) VALUES ($i, 3, 'c')"); });
in_flight('drop a constraint', 'items',
	'ALTER TABLE items DROP CONSTRAINT items_qty_check', undef,
	'INSERT INTO items (id, qty) VALUES (109, -1)',
	sub { my $node = shift; my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO items (id, qty, d) VALUES ($i, 4, 'c')"); });
for my $node ($west, $north)
{
	is($node->safe_psql('postgres', q{
			SELECT (SELECT count(*) FROM pg_indexes WHERE indexname = 'items_d')
			    || ',' || (SELECT count(*) FROM pg_constraint WHERE conname = 'items_qty_check')}),
		'0,0', $node->name . ': the index and the constraint dropped in east are gone');
}

##########
# RENAME TABLE: rows of the old shape name the table by its old name
##########

in_flight('rename the table', 'goods',
	'ALTER TABLE items RENAME TO goods', undef,
	"INSERT INTO goods (id, qty) VALUES (110, 110)",
	sub { my $node = shift; my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO items (id, qty, d) VALUES ($i, 5, 'old name')"); });
is($west->safe_psql('postgres', "SELECT count(*) FROM goods WHERE d = 'old name'"), '2',
	'rows written to the old table name land in the renamed table everywhere');
is($north->safe_psql('postgres', "SELECT table_name FROM cosmosrep.tables"), 'goods',
	'the renamed table stays multi-region');

##########
# SET SCHEMA: rows of the old shape name the table by its old schema
##########

$_->safe_psql('postgres', 'CREATE SCHEMA moved') for @regions;
in_flight('move the table to another schema', 'moved.goods',
	'ALTER TABLE goods SET SCHEMA moved', undef,
	"INSERT INTO moved.goods (id, qty) VALUES (112, 112)",
	sub { my $node = shift; my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO public.goods (id, qty, d) VALUES ($i, 6, 'old schema')"); });
in_flight('move the table back', 'public.goods',
	'ALTER TABLE moved.goods SET SCHEMA public', undef, undef,
	sub { my $node = shift; my $i = ++$id{ $node->name };
		$node->safe_psql('postgres', "INSERT INTO moved.goods (id, qty, d) VALUES ($i, 7, 'old schema')"); });
is($west->safe_psql('postgres', "SELECT count(*) FROM public.goods WHERE d = 'old schema'"), '4',
	'rows written to the table under its old schema land in the moved table everywhere');

##########
# Rows and a change in one transaction: each row applies against its shape
##########

$east->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO goods (id, qty) VALUES (130, 1);
	ALTER TABLE goods ADD COLUMN t1 text DEFAULT 'x';
	INSERT INTO goods (id, qty, t1) VALUES (131, 1, 'y');
	UPDATE goods SET t1 = 'z' WHERE id = 130;
	COMMIT});
wait_for_same_table(\@regions, 'goods');
is($north->safe_psql('postgres', q{SELECT string_agg(id || ':' || t1, ',' ORDER BY id) FROM goods WHERE id IN (130, 131)}),
	'130:z,131:y', 'rows before and after a change in the same transaction apply in order');
is(columns($_, 'goods'), columns($east, 'goods'), $_->name . ': same columns after a change inside a transaction with rows')
  for ($west, $north);

##########
# Conflict rows recorded before the changes stay readable
##########

for my $node (@regions)
{
	is($node->safe_psql('postgres', q{
			SELECT count(*) > 0 AND bool_and(coalesce(local_row, remote_row) ?& array['a', 'b'])
			  FROM cosmosrep.conflicts WHERE kind = 'update_update' AND key->>'id' = '1'}),
		't', $node->name . ': a conflict recorded before the changes shows its rows with the columns they had')
	  or diag($node->safe_psql('postgres', 'SELECT kind, local_row, remote_row FROM cosmosrep.conflicts'));
}

##########
# cosmosrep.ddl_replication and cosmosrep.replicate_ddl
##########

my ($ret, $stdout, $stderr) = $east->psql('postgres',
	"SET cosmosrep.ddl_replication = 'warn'; ALTER TABLE goods ADD COLUMN here_only int");
like($stderr,
	qr/WARNING:  ALTER TABLE of multi-region table "goods" is not replicated\nDETAIL:  cosmosrep.ddl_replication is "warn".\nHINT:  Make the same change in every region before rows of the new shape reach them, or use cosmosrep.replicate_ddl./,
	'with warn, DDL runs here only, with a warning');
$east->safe_psql('postgres',
	"SET cosmosrep.ddl_replication = 'warn'; ALTER TABLE goods DROP COLUMN here_only");

($ret, $stdout, $stderr) = $east->psql('postgres',
	"SET cosmosrep.ddl_replication = 'refuse'; ALTER TABLE goods ADD COLUMN z int");
like($stderr,
	qr/ERROR:  ALTER TABLE of multi-region table "goods" must go through cosmosrep.replicate_ddl\nDETAIL:  cosmosrep.ddl_replication is "refuse".\nHINT:  Run the statement with SELECT cosmosrep.replicate_ddl\('...'\), which applies it in every region./,
	'with refuse, plain DDL is refused');
$east->safe_psql('postgres',
	"SET cosmosrep.ddl_replication = 'refuse'; SELECT cosmosrep.replicate_ddl('ALTER TABLE goods ADD COLUMN z int DEFAULT 3')");
$east->safe_psql('postgres', "INSERT INTO goods (id, qty, z) VALUES (111, 1, 4)");
for my $node ($west, $north)
{
	ok(wait_for_value($node, "SELECT string_agg(id || ':' || z, ',' ORDER BY id) FROM goods WHERE id IN (1, 111)", '1:3,111:4'),
		$node->name . ': a statement of replicate_ddl is applied with the rows around it');
}
wait_for_same_table(\@regions, 'goods');
is(columns($north, 'goods'), columns($east, 'goods'), 'replicate_ddl: same columns everywhere');

# a region that refuses plain DDL still applies the changes of others
$west->append_conf('postgresql.conf', "cosmosrep.ddl_replication = 'refuse'");
$west->reload;
$east->safe_psql('postgres', 'ALTER TABLE goods ADD COLUMN zz int');
ok(wait_for_value($west, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'goods'::regclass AND attname = 'zz'", '1'),
	'a region with ddl_replication = refuse applies a change made elsewhere');
($ret, $stdout, $stderr) = $west->psql('postgres', 'ALTER TABLE goods DROP COLUMN zz');
like($stderr, qr/ERROR:  ALTER TABLE of multi-region table "goods" must go through cosmosrep.replicate_ddl/,
	'and refuses its own plain DDL');
$west->safe_psql('postgres', "SELECT cosmosrep.replicate_ddl('ALTER TABLE goods DROP COLUMN zz')");
$west->append_conf('postgresql.conf', "cosmosrep.ddl_replication = 'replicate'");
$west->reload;
for my $node ($east, $north)
{
	ok(wait_for_value($node, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'goods'::regclass AND attname = 'zz' AND NOT attisdropped", '0'),
		$node->name . ': the column dropped through replicate_ddl in west is gone');
}

($ret, $stdout, $stderr) = $east->psql('postgres',
	"SELECT cosmosrep.replicate_ddl('ALTER TABLE goods ADD COLUMN y int; ALTER TABLE goods ADD COLUMN w int')");
like($stderr, qr/ERROR:  cosmosrep.replicate_ddl runs exactly one statement\nDETAIL:  The string holds 2 statements./,
	'replicate_ddl refuses a string of two statements');
($ret, $stdout, $stderr) = $east->psql('postgres',
	"SELECT cosmosrep.replicate_ddl('CREATE TABLE plain (i int)')");
like($stderr, qr/ERROR:  cosmosrep.replicate_ddl replicates only a statement that changes a multi-region table\nHINT:  It takes ALTER TABLE, ALTER INDEX, RENAME, SET SCHEMA, CREATE INDEX, DROP INDEX, CREATE TABLE ... PARTITION OF, ATTACH PARTITION and DETACH PARTITION of a multi-region table./,
	'replicate_ddl refuses a statement on no multi-region table');
($ret, $stdout, $stderr) = $east->psql('postgres', 'CREATE INDEX CONCURRENTLY goods_qty ON goods (qty)');
like($stderr, qr/ERROR:  CREATE INDEX CONCURRENTLY of multi-region table "goods" cannot be replicated\nHINT:  Leave out CONCURRENTLY./,
	'CREATE INDEX CONCURRENTLY of a multi-region table is refused');
$east->safe_psql('postgres', 'CREATE TABLE plain (i int); CREATE INDEX plain_i ON plain (i); CREATE INDEX goods_qty ON goods (qty)');
($ret, $stdout, $stderr) = $east->psql('postgres', 'DROP INDEX goods_qty, plain_i');
like($stderr, qr/ERROR:  DROP INDEX changes multi-region table "goods" and another table\nHINT:  Change each table in a statement of its own./,
	'a DROP INDEX of a multi-region table and another table is refused');

##########
# A tenant: only the one statement travels, and it runs as the owner
##########

for my $node (@regions)
{
	$node->safe_psql('postgres', q{
		CREATE ROLE mallory LOGIN;
		CREATE SCHEMA app AUTHORIZATION mallory;
		SET ROLE mallory;
		CREATE TABLE app.t (id int PRIMARY KEY, v text);
		CREATE TABLE app.seen (who text);
		GRANT INSERT ON app.seen TO PUBLIC;
		CREATE FUNCTION app.whoami() RETURNS text LANGUAGE plpgsql AS $$
		BEGIN
			BEGIN
				EXECUTE 'ALTER ROLE mallory SUPERUSER';
			EXCEPTION WHEN insufficient_privilege THEN NULL;
			END;
			INSERT INTO app.seen VALUES (current_user);
			RETURN current_user;
		END $$;
	});
}
$east->safe_psql('postgres', "SET ROLE mallory; SELECT cosmosrep.enable_table('app.t'); INSERT INTO app.t VALUES (1, 'one')");
wait_for_same_table(\@regions, 'app.t');
$east->safe_psql('postgres',
	"ALTER TABLE app.t ADD CONSTRAINT t_who CHECK (app.whoami() IS NOT NULL); INSERT INTO app.seen VALUES ('second statement')",
	extra_params => [ '-U', 'mallory' ]);
for my $node ($west, $north)
{
	ok(wait_for_value($node, "SELECT count(*) FROM pg_constraint WHERE conname = 't_who'", '1'),
		$node->name . ': the tenant\'s constraint is applied');
	is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT who, ',') FROM app.seen"), 'mallory',
		$node->name . ': the tenant\'s statement ran as the table\'s owner, and only it travelled, not the statement after it');
	is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f',
		$node->name . ': the tenant did not become a superuser');
}
# a superuser's change of the tenant's table runs as the tenant elsewhere
$east->safe_psql('postgres', q{
	CREATE FUNCTION app.record() RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO app.seen VALUES ('record ' || current_user);
		RETURN true;
	END $$;
	ALTER FUNCTION app.record() OWNER TO mallory});
$west->safe_psql('postgres', q{
	CREATE FUNCTION app.record() RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO app.seen VALUES ('record ' || current_user);
		RETURN true;
	END $$;
	ALTER FUNCTION app.record() OWNER TO mallory});
$north->safe_psql('postgres', q{
	CREATE FUNCTION app.record() RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO app.seen VALUES ('record ' || current_user);
		RETURN true;
	END $$;
	ALTER FUNCTION app.record() OWNER TO mallory});
$east->safe_psql('postgres', 'ALTER TABLE app.t ADD CONSTRAINT t_record CHECK (app.record())');
is($east->safe_psql('postgres', "SELECT who FROM app.seen WHERE who LIKE 'record %'"),
	$east->safe_psql('postgres', "SELECT 'record ' || current_user"),
	'in the region where the superuser made it, the check ran as the superuser');
for my $node ($west, $north)
{
	ok(wait_for_value($node, "SELECT string_agg(who, ',') FROM app.seen WHERE who LIKE 'record %'", 'record mallory'),
		$node->name . ': a superuser\'s change of the tenant\'s table runs there as the table\'s owner, not as a superuser');
}

($ret, $stdout, $stderr) = $east->psql('postgres', "SET cosmosrep.ddl_replication = 'warn'",
	extra_params => [ '-U', 'mallory' ]);
like($stderr, qr/ERROR:  permission denied to set parameter "cosmosrep.ddl_replication"/,
	'a tenant cannot turn replication of its DDL off');

##########
# DDL racing DDL: while east's change has not reached west, west's change
# of the same table is refused; once it has, west's runs after it
##########

partition_regions(\@regions);
$east->safe_psql('postgres', 'ALTER TABLE goods ADD COLUMN p int DEFAULT 1');
$east->safe_psql('postgres', 'INSERT INTO goods (id, qty, p) VALUES (120, 1, 10)');
($ret, $stdout, $stderr) = $west->psql('postgres',
	"SET cosmosrep.ddl_fence_timeout = '1s'; ALTER TABLE goods ADD COLUMN q int DEFAULT 2");
like($stderr, qr/ERROR:  multi-region table "goods" is being changed by region "east"\nDETAIL:  A schema change stops the other regions' writes of the table until it reaches them\.\nHINT:  Retry the schema change when that one is done\./,
	'a change of a table that another region changed waits for that change, and is refused if it has not arrived within cosmosrep.ddl_fence_timeout');
is($west->safe_psql('postgres', "SELECT count(*) FROM pg_attribute WHERE attrelid = 'goods'::regclass AND attname = 'q'"),
	'0', 'the refused change left the table as it was');
$west->safe_psql('postgres', 'INSERT INTO goods (id, qty) VALUES (220, 1)');
$north->safe_psql('postgres', 'INSERT INTO goods (id, qty) VALUES (320, 1)');
heal_regions(\@regions);
$west->safe_psql('postgres', 'ALTER TABLE goods ADD COLUMN q int DEFAULT 2');
is($west->safe_psql('postgres', "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'goods'::regclass AND attname IN ('p', 'q')"),
	'p,q', 'west\'s change waits for east\'s to arrive, then runs');
$west->safe_psql('postgres', 'UPDATE goods SET q = 20 WHERE id = 220');
ok_all_streaming(\@regions, 'streams again after two regions added different columns one after the other');
my $both = q{SELECT string_agg(concat_ws(':', id, qty, coalesce(c::text, '-'), coalesce(d, '-'), z, p, q), ',' ORDER BY id) FROM goods};
my $expected_both = '';
for my $node (@regions)
{
	ok(wait_for_value($node, "SELECT count(*) FROM goods WHERE id IN (120, 220, 320) AND p IS NOT NULL AND q IS NOT NULL", '3'),
		$node->name . ': rows of every region have both added columns');
}
$expected_both = $east->safe_psql('postgres', $both);
ok(wait_for_value($east, q{SELECT string_agg(concat_ws(':', id, p, q), ',' ORDER BY id) FROM goods WHERE id IN (120, 220, 320)},
		'120:10:2,220:1:20,320:1:2'),
	'rows written before a column was added have its default everywhere');
is($_->safe_psql('postgres', $both), $expected_both,
	$_->name . ': the same rows as east, whatever the order of the columns')
  for ($west, $north);

##########
# Two regions changing one table at the same moment: at least one is
# refused, and the group ends alike
##########

my $open = $east->background_psql('postgres');
$open->query_safe('BEGIN');
$open->query_safe('ALTER TABLE goods ADD COLUMN raced int');
($ret, $stdout, $stderr) = $west->psql('postgres',
	"SET cosmosrep.ddl_fence_timeout = '1s'; ALTER TABLE goods ADD COLUMN raced text");
like($stderr, qr/ERROR:  multi-region table "goods" is being changed by region "east"/,
	'while east\'s change of the table is not committed, west\'s is refused');
$open->query_safe('COMMIT');
$open->quit;
ok_all_streaming(\@regions, 'streams again after two regions changed one table at once');
for my $node (@regions)
{
	ok(wait_for_value($node, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'goods'::regclass AND attname = 'raced'",
			$east->safe_psql('postgres', "SELECT count(*) FROM pg_attribute WHERE attrelid = 'goods'::regclass AND attname = 'raced'")),
		$node->name . ': the column raced for is where east has it');
}
is($_->safe_psql('postgres', q{SELECT count(*) FROM cosmosrep.replication_status WHERE last_error IS NOT NULL}),
	'0', $_->name . ': no stream stopped on the race') for @regions;

$_->stop for @regions;
done_testing();
