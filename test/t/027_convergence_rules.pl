# Convergence rules beyond the order of arrival, in a group of three:
#
# R4  When an update leaves a large, out-of-line (TOASTed) column
#     unchanged, the stream does not carry that column; the row that wins
#     is still the winner's row as the winning region held it: a losing
#     region's concurrent change of the large column must not survive
#     under the winner's version, in the losing region nor in a third
#     region that applied the loser's change first.
# R5  Tombstones do not depend on session settings: a timestamptz key
#     deleted in a session with TimeZone Asia/Tokyo and DateStyle SQL, DMY,
#     and float8 keys deleted with extra_float_digits = 0, stay deleted
#     when an older concurrent update of the same rows arrives.
# R7  enable_table on a table that already has rows in the enabling region
#     brings those rows, with their versions, to every region.
#
# R4 and R5 run in one partition: all six links are paused, the writes
# run in a fixed sequence (each statement commits before the next, so it
# carries a higher version; an assertion checks it), each region writes a
# mark row, and the links are resumed in an order chosen for R4.  Since a
# stream is applied in commit order, a region that holds another's mark
# has applied every write that region made before it.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my @all = make_group(qw(a b c));
my ($ra, $rb, $rc) = @all;
my %node = map { ($_->name => $_) } @all;

my $TS = "'2024-03-01 12:34:56.789+00'::timestamptz";
my $THIRD = '1::float8 / 3';
my $POINT3 = '0.1::float8 + 0.2::float8';

for my $node (@all)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE marks (src text, round int, PRIMARY KEY (src, round));
		CREATE TABLE docs_big (id int PRIMARY KEY, small text NOT NULL, big text NOT NULL);
		ALTER TABLE docs_big ALTER COLUMN big SET STORAGE EXTERNAL;
		CREATE TABLE ts_keyed (ts timestamptz PRIMARY KEY, v text NOT NULL);
		CREATE TABLE f_keyed (f float8 PRIMARY KEY, v text NOT NULL);
		CREATE TABLE preload (id int PRIMARY KEY, v text NOT NULL);
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('marks');
	SELECT cosmosrep.enable_table('docs_big');
	SELECT cosmosrep.enable_table('ts_keyed');
	SELECT cosmosrep.enable_table('f_keyed');
});
for my $node ($rb, $rc)
{
	$node->poll_query_until('postgres', 'SELECT count(*) = 4 FROM cosmosrep.tables')
	  or die 'enabling the tables did not reach ' . $node->name;
}

##########
# Helpers: versions of writes, partition and marks
##########

my @versions;    # [what, lo, hi] of each write, in statement order

# run an INSERT or UPDATE of one row in $node, returning $returning
# (which ends with _cr_version); log the version
sub write_row
{
	my ($node, $sql, $returning, $what) = @_;
	my $out = $node->safe_psql('postgres', "$sql RETURNING $returning");
	my @lines = split /\n/, $out;
	die "\"$sql\" in " . $node->name . ' wrote ' . scalar(@lines) . ' rows' unless @lines == 1;
	my $version = (split /\|/, $lines[0])[-1];
	push @versions, [ $what, $version, $version ];
	return $lines[0];
}

# run $sql (a DELETE ... RETURNING, after optional SET commands in $set)
# in $node between two versions taken from its clock; the delete's version
# lies strictly between them.  Returns the rows the DELETE returned.
sub delete_rows
{
	my ($node, $set, $sql, $what) = @_;
	my @out = split /\n/, $node->safe_psql('postgres',
		"$set SELECT cosmosrep.next_version(); $sql; SELECT cosmosrep.next_version()");
	push @versions, [ $what, $out[0] + 1, $out[-1] - 1 ];
	return @out[ 1 .. $#out - 1 ];
}

sub versions_follow_statements
{
	my @bad;
	for my $i (1 .. $#versions)
	{
		my ($p, $c) = @versions[ $i - 1, $i ];
		push @bad, "$c->[0] ($c->[1]..$c->[2]) after $p->[0] ($p->[1]..$p->[2])"
		  unless $p->[2] < $c->[1];
	}
	is(join('; ', @bad), '', 'each write has a higher version than the one before it');
	return;
}

sub partition
{
	partition_regions(\@all);
	return;
}

# resume in $dst the streams of @src and wait until $dst holds their marks
# of $round
sub resume_and_wait
{
	my ($round, $dst, @src) = @_;
	$dst->safe_psql('postgres', "SELECT cosmosrep.resume_region('" . $_->name . "')") for @src;
	for my $src (@src)
	{
		ok($dst->poll_query_until('postgres',
				"SELECT count(*) = 1 FROM marks WHERE src = '" . $src->name . "' AND round = $round"),
			$dst->name . ' applies the writes of ' . $src->name);
	}
	return;
}

##########
# R4 and R5: the rows before the partition
##########

$ra->safe_psql('postgres', qq{
	INSERT INTO docs_big SELECT g, 'orig small ' || g, repeat('orig big ' || g || ' ', 3000)
	  FROM generate_series(1, 4) g;
	INSERT INTO ts_keyed VALUES ($TS, 'orig');
	INSERT INTO f_keyed VALUES ($THIRD, 'orig'), ($POINT3, 'orig');
});
wait_for_same_table(\@all, $_) for qw(docs_big ts_keyed f_keyed);

for my $node (@all)
{
	my $toast = $node->safe_psql('postgres',
		"SELECT reltoastrelid::regclass FROM pg_class WHERE oid = 'docs_big'::regclass");
	is($node->safe_psql('postgres', qq{
			SELECT (SELECT count(*) FROM docs_big
			         WHERE pg_column_compression(big) IS NULL
			           AND octet_length(big) BETWEEN 20000 AND 50000)
			    || ' ' || (SELECT count(DISTINCT chunk_id) >= 4 FROM $toast)}),
		'4 true',
		$node->name . ': the big values are 20-50 kB, uncompressed and stored out of line');
}

##########
# R4 and R5: the partition
##########

partition();

# R4: a loser changes big, the winner then changes only small
write_row($rb, "UPDATE docs_big SET big = repeat('b big 1 ', 4000) WHERE id = 1",
	'_cr_version', 'b changes big of row 1');
my %winner;
$winner{1} = write_row($ra, "UPDATE docs_big SET small = 'a small 1' WHERE id = 1",
	'small, md5(big), length(big), _cr_version', 'a changes small of row 1');
write_row($ra, "UPDATE docs_big SET big = repeat('a big 2 ', 4000) WHERE id = 2",
	'_cr_version', 'a changes big of row 2');
$winner{2} = write_row($rb, "UPDATE docs_big SET small = 'b small 2' WHERE id = 2",
	'small, md5(big), length(big), _cr_version', 'b changes small of row 2');
delete_rows($rb, '', 'DELETE FROM docs_big WHERE id = 3 RETURNING id', 'b deletes row 3');
$winner{3} = write_row($ra, "UPDATE docs_big SET small = 'a small 3' WHERE id = 3",
	'small, md5(big), length(big), _cr_version', 'a changes small of row 3');
write_row($rc, "UPDATE docs_big SET big = repeat('c big 4 ', 4000) WHERE id = 4",
	'_cr_version', 'c changes big of row 4');
$winner{4} = write_row($ra, "UPDATE docs_big SET small = 'a small 4' WHERE id = 4",
	'small, md5(big), length(big), _cr_version', 'a changes small of row 4');

# R5: b updates, a then deletes in a session whose settings print the
# key differently from the defaults
write_row($rb, "UPDATE ts_keyed SET v = 'b older update' WHERE ts = $TS",
	'_cr_version', 'b updates the timestamptz row');
my ($ts_shown) = delete_rows($ra, "SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'SQL, DMY';",
	"DELETE FROM ts_keyed WHERE ts = $TS RETURNING ts", 'a deletes the timestamptz row');
is($ts_shown, '01/03/2024 21:34:56.789 JST',
	'a deletes the timestamptz row in a session that shows its key as 01/03/2024 21:34:56.789 JST');
write_row($rb, "UPDATE f_keyed SET v = 'b older update' WHERE f = $THIRD",
	'_cr_version', 'b updates the float8 row 1/3');
write_row($rb, "UPDATE f_keyed SET v = 'b older update' WHERE f = $POINT3",
	'_cr_version', 'b updates the float8 row 0.1 + 0.2');
my @f_shown = delete_rows($ra, 'SET extra_float_digits = 0;',
	"DELETE FROM f_keyed WHERE f IN ($THIRD, $POINT3) RETURNING f", 'a deletes both float8 rows');
is(join(' ', sort @f_shown), '0.3 0.333333333333333',
	'a deletes the float8 rows in a session that shows their keys with 15 digits');

versions_follow_statements();

$_->safe_psql('postgres', "INSERT INTO marks VALUES ('" . $_->name . "', 1)") for @all;

# Heal so that c applies b's change of big 1 before a's newer update of
# row 1, and b applies c's change of big 4 before a's newer update of
# row 4: the updates of a do not carry big.  a applies both of the others
# at once.
resume_and_wait(1, $ra, $rb, $rc);
resume_and_wait(1, $rb, $rc);
resume_and_wait(1, $rc, $rb);
resume_and_wait(1, $rb, $ra);
resume_and_wait(1, $rc, $ra);

my %proves = (
	1 => "row 1 is a's row as a held it (a's small, the original big, a's version): b's older change of big does not survive under a's version",
	2 => "row 2 is b's row as b held it (b's small, the original big, b's version): a's older change of big does not survive under b's version",
	3 => "row 3 is a's row as a held it: a's update is newer than b's delete and brings the whole row back",
	4 => "row 4 is a's row as a held it (a's small, the original big, a's version): c's older change of big does not survive under a's version",
);
for my $node (@all)
{
	for my $id (1 .. 4)
	{
		is($node->safe_psql('postgres',
				"SELECT small, md5(big), length(big), _cr_version FROM docs_big WHERE id = $id"),
			$winner{$id}, $node->name . ": R4: $proves{$id}");
	}
	is($node->safe_psql('postgres', "SELECT count(*) FROM ts_keyed WHERE ts = $TS"), '0',
		$node->name . ': R5: the timestamptz key deleted under TimeZone Asia/Tokyo, DateStyle SQL, DMY stays deleted: the older update of b does not recreate it');
	is($node->safe_psql('postgres', "SELECT count(*) FROM f_keyed WHERE f = $THIRD"), '0',
		$node->name . ': R5: the float8 key 1/3 deleted with extra_float_digits = 0 stays deleted: the older update of b does not recreate it');
	is($node->safe_psql('postgres', "SELECT count(*) FROM f_keyed WHERE f = $POINT3"), '0',
		$node->name . ': R5: the float8 key 0.1 + 0.2 deleted with extra_float_digits = 0 stays deleted: the older update of b does not recreate it');
}

# every region has applied every write: the tables are final, so there is
# nothing to wait for beyond a moment
{
	local $PostgreSQL::Test::Utils::timeout_default = 5;
	wait_for_same_table(\@all, $_) for qw(docs_big ts_keyed f_keyed);
}

##########
# R7: enable a table that already has rows
##########

$ra->safe_psql('postgres',
	"INSERT INTO preload SELECT g, 'preloaded ' || g FROM generate_series(1, 100) g");
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('preload')");
is($ra->safe_psql('postgres', 'SELECT count(DISTINCT _cr_version) FROM preload'), '100',
	'a: enable_table gives each of the 100 existing rows a version of its own');
for my $node ($rb, $rc)
{
	$node->poll_query_until('postgres', 'SELECT count(*) = 5 FROM cosmosrep.tables')
	  or die 'enabling preload did not reach ' . $node->name;
}
wait_for_same_table(\@all, 'preload');
my $rows_a = $ra->safe_psql('postgres',
	"SELECT md5(string_agg(id || ':' || v || ':' || _cr_version, ',' ORDER BY id)) FROM preload");
for my $node ($rb, $rc)
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM preload'), '100',
		$node->name . ': R7: the 100 rows a held when it enabled the table arrive');
	is($node->safe_psql('postgres',
			"SELECT md5(string_agg(id || ':' || v || ':' || _cr_version, ',' ORDER BY id)) FROM preload"),
		$rows_a, $node->name . ': R7: the rows arrive with the values and versions they have in a (md5 of every id:v:version)');
}

ok_all_streaming(\@all, 'replication keeps streaming');

$_->stop for @all;
done_testing();
