# A schema change racing writes in other regions (ddl_fence.c).  A change
# that checks or converts values first stops the other regions' writes of
# the table and applies what they wrote: it then either fails where it is
# made, on their rows, with PostgreSQL's own error, or succeeds in every
# region.  Writes refused meanwhile get the fence's error and are retried
# by the application.  A region that cannot be reached refuses the change.
# Only link roles may fence a table.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @regions = make_group(qw(east west north));
my ($east, $west, $north) = @regions;

for my $node (@regions)
{
	$node->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY, code text, qty int)');
}
$east->safe_psql('postgres', "SELECT cosmosrep.enable_table('items')");
$east->safe_psql('postgres',
	"INSERT INTO items SELECT g, g::text, g FROM generate_series(1, 20000) g");
wait_for_same_table(\@regions, 'items');

sub column_type
{
	my ($node, $column) = @_;
	return $node->safe_psql('postgres',
		"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = '$column'");
}

sub no_stream_errors
{
	my ($what) = @_;
	ok_all_streaming(\@regions, $what);
	return;
}

##########
# A write in west that the change cannot take: the change fails in east,
# where it is made, and the table stays as it was everywhere
##########

$west->safe_psql('postgres', "INSERT INTO items VALUES (30001, 'abc', 1)");
my ($ret, $stdout, $stderr) = $east->psql('postgres',
	'ALTER TABLE items ALTER COLUMN code TYPE int USING code::int');
like($stderr, qr/ERROR:  invalid input syntax for type integer: "abc"/,
	'a type change that a write just made in another region cannot take fails where it is made');
is(column_type($_, 'code'), 'text', $_->name . ': the column keeps its type') for @regions;
is($west->safe_psql('postgres', "INSERT INTO items VALUES (30002, '30002', 2) RETURNING id"),
	'30002', 'the failed change lifted its fence in west');
no_stream_errors('no stream stopped after the refused type change');

##########
# The same with a CHECK constraint and a unique index, the violating row
# written in north
##########

$north->safe_psql('postgres', "INSERT INTO items VALUES (30003, '30003', -5)");
($ret, $stdout, $stderr) = $east->psql('postgres',
	'ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)');
like($stderr, qr/ERROR:  check constraint "qty_positive" of relation "items" is violated by some row/,
	'a constraint that a write just made in another region breaks fails where it is made');
$north->safe_psql('postgres', "INSERT INTO items VALUES (30004, '1', 7)");
($ret, $stdout, $stderr) = $east->psql('postgres',
	'CREATE UNIQUE INDEX items_code ON items (code)');
like($stderr, qr/ERROR:  could not create unique index "items_code"/,
	'a unique index that a write just made in another region breaks fails where it is made');
for my $node (@regions)
{
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM pg_constraint WHERE conname = 'qty_positive'")
		  . $node->safe_psql('postgres', "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_code'"),
		'00', $node->name . ': neither the constraint nor the index exists');
}
$north->safe_psql('postgres', 'DELETE FROM items WHERE id IN (30001, 30003, 30004)');
wait_for_same_table(\@regions, 'items');

##########
# The change under a stream of writes in west: some are refused while the
# change travels, the others land; every region ends with the new type
# and the same rows, and every stream goes on
##########

$west->safe_psql('postgres', q{
	CREATE TABLE writes (id int PRIMARY KEY, landed boolean);
	CREATE FUNCTION try_insert(i int) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO items VALUES (i, i, i);
		RETURN true;
	EXCEPTION WHEN lock_not_available THEN
		RETURN false;
	END $$;
	CREATE PROCEDURE writer(first int, n int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN first..first + n - 1 LOOP
			INSERT INTO writes VALUES (i, try_insert(i));
			COMMIT;
			PERFORM pg_sleep(0.002);
		END LOOP;
	END $$;});
my $writer = $west->background_psql('postgres');
$writer->query_until(qr/started/, "\\echo started\nCALL writer(40001, 3000);\n\\echo done\n");
ok($west->poll_query_until('postgres', 'SELECT count(*) > 100 FROM writes'), 'west is writing');
$east->safe_psql('postgres', 'ALTER TABLE items ALTER COLUMN code TYPE int USING code::int');
$writer->query_until(qr/done/, '');
$writer->quit;
my ($landed, $refused) = split /\|/, $west->safe_psql('postgres',
	'SELECT count(*) FILTER (WHERE landed), count(*) FILTER (WHERE NOT landed) FROM writes');
cmp_ok($refused, '>', 0, "writes in west were refused while the change travelled ($refused refused, $landed landed)");
no_stream_errors('no stream stopped on the change racing writes');
wait_for_same_table(\@regions, 'items');
is(column_type($_, 'code'), 'integer', $_->name . ': the column has its new type') for @regions;
is($_->safe_psql('postgres', 'SELECT count(*) FROM items WHERE id BETWEEN 40001 AND 43000'),
	$landed, $_->name . ': every write that landed in west, and no refused one') for @regions;

##########
# A change that only renames or adds commutes with writes: it does not
# stop them, and rows of the old shape in flight land in the new shape
##########

$writer = $west->background_psql('postgres');
$writer->query_until(qr/started/, "\\echo started\nCALL writer(50001, 1000);\n\\echo done\n");
ok($west->poll_query_until('postgres', 'SELECT count(*) > 3100 FROM writes'), 'west is writing again');
$east->safe_psql('postgres', 'ALTER TABLE items RENAME COLUMN qty TO quantity');
$writer->query_until(qr/done/, '');
$writer->quit;
is($west->safe_psql('postgres', 'SELECT count(*) FROM writes WHERE id > 50000 AND NOT landed'),
	'0', 'a rename stops no write');
no_stream_errors('no stream stopped on the rename racing writes');
wait_for_same_table(\@regions, 'items');

##########
# A region that cannot be reached refuses the change; it leaves the
# table as it was and the group goes on
##########

$north->stop;
($ret, $stdout, $stderr) = $east->psql('postgres',
	"SET cosmosrep.ddl_fence_timeout = '2s'; ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (quantity > 0)");
like($stderr, qr/ERROR:  could not connect to region "north"/,
	'a change that needs every region is refused while one cannot be reached');
is($east->safe_psql('postgres', "SELECT count(*) FROM pg_constraint WHERE conname = 'qty_positive'"),
	'0', 'the refused change left the table as it was');
is($west->safe_psql('postgres', "INSERT INTO items VALUES (60001, 60001, 1) RETURNING id"),
	'60001', 'the refused change lifted its fence in the region it reached');
$north->start;
# a write of north's clears the connection errors its peers recorded
$north->safe_psql('postgres', 'INSERT INTO items VALUES (60002, 60002, 2)');
$east->safe_psql('postgres', 'ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (quantity > 0)');
for my $node (@regions)
{
	ok(wait_for_value($node, "SELECT count(*) FROM pg_constraint WHERE conname = 'qty_positive'", '1'),
		$node->name . ': the change made once every region is back reaches it');
}
no_stream_errors('every stream goes on after the region came back');
wait_for_same_table(\@regions, 'items');

##########
# A row of the old shape that reaches a region after a column was added
# with a default and the table rewritten (ALTER COLUMN TYPE) there: the
# rewrite makes PostgreSQL forget the value older rows get, the value
# recorded at the ADD COLUMN stands in.  north's row reaches west only
# after east's two changes (west pauses north, north pauses east).
##########

$west->safe_psql('postgres', "SELECT cosmosrep.pause_region('north')");
$north->safe_psql('postgres', "SELECT cosmosrep.pause_region('east')");
$north->safe_psql('postgres', "INSERT INTO items VALUES (70001, 70001, 3)");
$east->safe_psql('postgres', 'ALTER TABLE items ADD COLUMN grade int DEFAULT 7');
$east->safe_psql('postgres', 'ALTER TABLE items ALTER COLUMN quantity TYPE bigint');
ok($west->poll_query_until('postgres',
		"SELECT format_type(atttypid, atttypmod) = 'bigint' FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'quantity'"),
	'west has both changes before north\'s row');
is($west->safe_psql('postgres', 'SELECT count(*) FROM items WHERE id = 70001'), '0',
	'and not north\'s row yet');
$west->safe_psql('postgres', "SELECT cosmosrep.resume_region('north')");
$north->safe_psql('postgres', "SELECT cosmosrep.resume_region('east')");
wait_for_same_table(\@regions, 'items');
is($_->safe_psql('postgres', 'SELECT grade FROM items WHERE id = 70001'), '7',
	$_->name . ': the row written before the column was added has its default') for @regions;
no_stream_errors('every stream goes on after the row of the old shape');

##########
# Several changes of the table in one transaction: one that checks rows
# comes first (its fence then covers the others); after another change it
# is refused, as the wait for the other regions' writes could not end
##########

($ret, $stdout, $stderr) = $east->psql('postgres',
	'BEGIN; ALTER TABLE items ADD COLUMN note text; ALTER TABLE items ALTER COLUMN quantity TYPE numeric; COMMIT');
like($stderr, qr/ERROR:  a change of multi-region table "items" that checks its rows must come first in its transaction\nDETAIL:  It waits until this region has applied the other regions' writes of the table, which this transaction's earlier change of the table holds up\.\nHINT:  Run it in a transaction of its own, or before the other changes of the table\./,
	'a change that checks rows after another change of the table in its transaction is refused');
is($east->safe_psql('postgres', "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'note'"),
	'0', 'and its transaction changed nothing');
$east->safe_psql('postgres',
	'BEGIN; ALTER TABLE items ALTER COLUMN quantity TYPE numeric; ALTER TABLE items ADD COLUMN note text;'
	  . ' ALTER TABLE items ADD CONSTRAINT note_short CHECK (length(note) < 100); COMMIT');
for my $node (@regions)
{
	ok(wait_for_value($node, "SELECT count(*) FROM pg_constraint WHERE conname = 'note_short'", '1'),
		$node->name . ': a transaction whose first change checks rows, then others, reaches it');
	is(column_type($node, 'quantity'), 'numeric', $node->name . ': with every change');
}
no_stream_errors('every stream goes on after a transaction of several changes');
wait_for_same_table(\@regions, 'items');

##########
# Only link roles fence a table
##########

$west->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
($ret, $stdout, $stderr) = $west->psql('postgres',
	"SELECT cosmosrep.fence_table('public', 'items', 1::int2, true)",
	extra_params => [ '-U', 'mallory' ]);
like($stderr, qr/ERROR:  permission denied for function fence_table/,
	'a role that is not a link role cannot stop the writes of a table');
($ret, $stdout, $stderr) = $west->psql('postgres',
	"SELECT cosmosrep.unfence_table('public', 'items', 1::int2)",
	extra_params => [ '-U', 'mallory' ]);
like($stderr, qr/ERROR:  permission denied for function unfence_table/,
	'nor lift a fence');

# a role that does not own the table cannot fence it through a change it
# may not make: the change fails on its privileges, and no region stops
# writing the table
$east->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
($ret, $stdout, $stderr) = $east->psql('postgres',
	'ALTER TABLE items ALTER COLUMN quantity TYPE text',
	extra_params => [ '-U', 'mallory' ]);
like($stderr, qr/ERROR:  must be owner of table items/,
	'a change of a table by a role that does not own it is refused');
is($west->safe_psql('postgres', "INSERT INTO items VALUES (80001, 80001, 1) RETURNING id"),
	'80001', 'and did not fence the table in the other regions');

$_->stop for @regions;
done_testing();
