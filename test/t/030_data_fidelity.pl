# Data fidelity between two regions: every common column type, edge values
# and NULLs arrive exactly as written; large TOASTed values survive updates
# that leave them unchanged; a transaction is applied whole; TRUNCATE
# replicates; a table whose columns differ between regions, or that is
# missing in one region, stops replication of that stream with a clear
# error in cosmosrep.replication_status and loses nothing once fixed.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my ($ra, $rb) = make_group(qw(a b));

# poll $query on $node until it returns $expected, for at most $seconds;
# for the checks of known bugs, which must not hold the test for the
# default timeout
sub poll_briefly
{
	my ($node, $query, $expected, $seconds) = @_;
	my $deadline = time + $seconds;
	my $got;

	while (time < $deadline)
	{
		$got = $node->safe_psql('postgres', $query);
		return 1 if $got eq $expected;
		select(undef, undef, undef, 0.2);
	}
	return 0;
}

# every row of $table as text, ordered by primary key
sub rows_as_text
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM $table t");
}

##########
# Every common type, edge values and NULLs
##########

# the enum is created in both regions; a dummy type in b gives it another OID
$rb->safe_psql('postgres', "CREATE TYPE padding AS ENUM ('x')");
for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', q{
		CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ünïcødé ☃');
		CREATE TABLE alltypes (
			id            int PRIMARY KEY,
			c_int         int,
			c_bigint      bigint,
			c_smallint    smallint,
			c_numeric     numeric,
			c_numeric_s   numeric(40, 12),
			c_float8      float8,
			c_float4      real,
			c_text        text,
			c_varchar     varchar(20),
			c_char        char(5),
			c_bytea       bytea,
			c_bool        bool,
			c_timestamptz timestamptz,
			c_timestamp   timestamp,
			c_date        date,
			c_time        time,
			c_interval    interval,
			c_uuid        uuid,
			c_jsonb       jsonb,
			c_json        json,
			c_int_arr     int[],
			c_text_arr    text[],
			c_mood        mood,
			c_inet        inet
		);
	});
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('alltypes')");
ok(wait_for_value($rb,
		"SELECT count(*) FROM cosmosrep.tables WHERE table_name = 'alltypes'::regclass", '1'),
	'enabling alltypes in a makes it multi-region in b');

# each row stresses another corner of the text representation
$ra->safe_psql('postgres', <<'SQL');
	INSERT INTO alltypes VALUES
	-- ordinary values
	(1, 42, 9000000000, 7, 3.14159265358979323846264338327950288419716939937510,
	 12345678.123456789012, 0.1, 0.1, 'plain text', 'varchar', 'abc',
	 '\xdeadbeef', true, '2024-03-04 05:06:07.123456+00', '2024-03-04 05:06:07.654321',
	 '2024-03-04', '23:59:59.999999', '1 year 2 mons 3 days 04:05:06.789',
	 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": 1, "b": [1, 2.5, null, true]}',
	 '{"keep":  "whitespace" , "dup": 1, "dup": 2}', '{1,2,3}', '{one,two,three}',
	 'happy', '192.168.0.1/24'),
	-- NULL in every column
	(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
	-- empty values, NaN and the smallest values
	(3, -2147483648, -9223372036854775808, -32768, 'NaN', 0, 'NaN', 'NaN', '', '', '',
	 '\x', false, '-infinity', '-infinity', '-infinity', '00:00:00', '-178000000 years',
	 '00000000-0000-0000-0000-000000000000', '{}', '""', '{}', '{}', 'sad', '::/0'),
	-- huge numbers, infinities and the largest values
	(4, 2147483647, 9223372036854775807, 32767,
	 (repeat('9', 1000) || '.' || repeat('0', 999) || '1')::numeric,
	 99999999999999999999999999.999999999999, 1.7976931348623157e308,
	 3.4028235e38, repeat('long ', 2000), repeat('x', 20), 'xxxxx',
	 decode(repeat('ff', 100), 'hex'), true, 'infinity', 'infinity', 'infinity',
	 '24:00:00', '178000000 years', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
	 '{"n": 1e400, "big": 123456789012345678901234567890.123456789}',
	 '[1e400]', '{2147483647,-2147483648}', '{"NULL",NULL,""}', 'ok',
	 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'),
	-- negative zero, tiny numbers and numeric infinity
	(5, 0, 0, 0, '-Infinity', -0.000000000001, '-0', '-0', ' ', ' ', ' ',
	 '\x00', false, '1970-01-01 00:00:00+00', '0001-01-01 00:00:00 BC', '4713-01-01 BC',
	 '00:00:00.000001', '-1 mons +1 days -00:00:00.000001',
	 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '[]', 'null', '{{1,2},{3,NULL}}',
	 '{{a,b},{c,d}}', 'sad', '10.0.0.1'),
	-- unicode everywhere
	(6, 1, 1, 1, 'Infinity', 1, 4.9e-324, 1.4e-45,
	 'Grüße, 世界! 🎉 עִבְרִית العربية e' || chr(769) || ' 𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
	 '世界世界世界世界世界世界世界世界世界世界', 'ñü€😀', convert_to('日本語 ☃', 'UTF8'), true,
	 '2024-12-31 23:59:59.999999-12', '2000-02-29 12:00:00', '2000-02-29', '12:34:56',
	 '00:00:00', '6ba7b810-9dad-11d1-80b4-00c04fd430c8',
	 '{"ключ": "значение", "emoji": "😀", "esc": "\u00e9\t\n", "nested": {"a": [{"b": {}}]}}',
	 '{"ключ": "\u00e9"}', '{-1,0,1}', '{"日本","😀",ñ}', 'ünïcødé ☃', '::1'),
	-- characters that need quoting or escaping
	(7, -1, -1, -1, 0.00000000000000000000000000000000000000000000001, -0.5,
	 0.30000000000000004, 0.3, E'tab\there\nnewline\r\\backslash ''single'' "double" \x01 {a,b} (1,2) $$ ; -- /* */',
	 E'\\\\ '' " \t', E'\\''"', decode('000102030405060708090a0b0c0d0e0f', 'hex') ||
	 (SELECT string_agg(set_byte('\x00'::bytea, 0, g), ''::bytea) FROM generate_series(16, 255) g),
	 false, '2024-06-30 23:59:60+00', '2024-06-30 12:00:00', '2024-06-30', '00:00:00',
	 '1 day', 'a0eebc999c0b4ef8bb6d6bb9bd380a11',
	 '{"q": "\"quoted\" \\\\ back", "k\"ey": "v,{}[]"}',
	 '{"q": "\"quoted\""}',
	 '{}', E'{"comma,here","quote\\"here","back\\\\slash","brace{}","space here",""," "}',
	 'ok', '2001:db8::/32');
SQL

wait_for_same_table([$ra, $rb], 'alltypes');
is(rows_as_text($rb, 'alltypes'), rows_as_text($ra, 'alltypes'),
	'every column of every row written in a reads the same in b');

is($rb->safe_psql('postgres', q{
	SELECT num_nulls(c_int, c_bigint, c_smallint, c_numeric, c_numeric_s, c_float8, c_float4,
	                 c_text, c_varchar, c_char, c_bytea, c_bool, c_timestamptz, c_timestamp,
	                 c_date, c_time, c_interval, c_uuid, c_jsonb, c_json, c_int_arr,
	                 c_text_arr, c_mood, c_inet)
	  FROM alltypes WHERE id = 2}), '24',
	'NULL arrives as NULL, not as an empty or default value');
is($rb->safe_psql('postgres', q{
	SELECT c_numeric = 'NaN' AND c_float8 = 'NaN' AND c_text = '' AND c_varchar = ''
	       AND c_bytea = '\x' AND c_int_arr = '{}' AND c_jsonb = '{}' AND c_json::text = '""'
	       AND c_bigint = -9223372036854775808 AND c_date = '-infinity'
	  FROM alltypes WHERE id = 3}), 't',
	'empty strings, empty arrays, NaN and minimum values arrive unchanged');
is($rb->safe_psql('postgres', q{
	SELECT c_numeric = (repeat('9', 1000) || '.' || repeat('0', 999) || '1')::numeric
	       AND length(c_numeric::text) = 2001 AND c_float8 = 1.7976931348623157e308
	       AND c_bytea = decode(repeat('ff', 100), 'hex')
	  FROM alltypes WHERE id = 4}), 't',
	'a numeric of 2000 digits and the largest floats arrive digit for digit');
is($rb->safe_psql('postgres', q{
	SELECT c_float8::text || ' ' || c_float4::text || ' ' || c_numeric::text
	  FROM alltypes WHERE id = 5}), '-0 -0 -Infinity',
	'negative zero and numeric infinity arrive unchanged');
is($rb->safe_psql('postgres', q{
	SELECT c_text = 'Grüße, 世界! 🎉 עִבְרִית العربية e' || chr(769) || ' 𝔘𝔫𝔦𝔠𝔬𝔡𝔢'
	       AND c_varchar = '世界世界世界世界世界世界世界世界世界世界' AND c_mood = 'ünïcødé ☃'
	       AND c_jsonb->>'emoji' = '😀' AND c_text_arr[2] = '😀'
	  FROM alltypes WHERE id = 6}), 't',
	'unicode text, varchar, jsonb, arrays and enum labels arrive unchanged');
is($rb->safe_psql('postgres', q{
	SELECT c_float8 = 0.1::float8 + 0.2::float8 AND c_float8 <> 0.3::float8
	       AND length(c_bytea) = 256 AND get_byte(c_bytea, 0) = 0 AND get_byte(c_bytea, 255) = 255
	       AND c_text_arr[2] = 'quote"here' AND c_text_arr[3] = 'back\slash'
	       AND array_length(c_text_arr, 1) = 7 AND position(E'\t' in c_text) > 0
	  FROM alltypes WHERE id = 7}), 't',
	'floats keep every bit, bytea keeps all 256 byte values, quotes and backslashes survive');

# rows written in b arrive in a just as well, updates included
$rb->safe_psql('postgres', q{
	INSERT INTO alltypes (id, c_text, c_text_arr, c_numeric, c_bytea, c_mood)
	  SELECT 100 + id, c_text || ' from b', c_text_arr, c_numeric, c_bytea, c_mood
	    FROM alltypes WHERE id <= 7;
	UPDATE alltypes SET c_jsonb = c_jsonb || '{"updated": "ü"}', c_int_arr = c_int_arr || 99
	 WHERE id IN (1, 4, 6);
	UPDATE alltypes SET c_text = NULL, c_mood = NULL WHERE id = 7;
	UPDATE alltypes SET c_text = '', c_numeric = 'NaN' WHERE id = 2;
});
wait_for_same_table([$ra, $rb], 'alltypes');
is(rows_as_text($ra, 'alltypes'), rows_as_text($rb, 'alltypes'),
	'inserts and updates written in b, to and from NULL, read the same in a');

##########
# Large TOASTed values
##########

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres',
		'CREATE TABLE big (id int PRIMARY KEY, small int, doc text, blob bytea, info jsonb)');
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('big')");
$rb->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM cosmosrep.tables WHERE table_name = 'big'::regclass")
  or die 'enabling big did not reach b';

# 1 MB of hex text (compressible), 512 kB of random-looking bytes (not),
# and a jsonb document; a stores doc uncompressed, b compressed
my $big_values = q{
	SELECT string_agg(md5(g::text), '') AS doc,
	       decode(string_agg(md5((g * 7)::text), ''), 'hex') AS blob,
	       jsonb_build_object('items', jsonb_agg(md5(g::text))) AS info
	  FROM generate_series(1, 32768) g};
$ra->safe_psql('postgres', qq{
	ALTER TABLE big ALTER COLUMN doc SET STORAGE EXTERNAL;
	INSERT INTO big SELECT i, 0, doc, blob, info FROM ($big_values) v, generate_series(1, 3) i;
});
my $expect_big = $ra->safe_psql('postgres', qq{
	SELECT md5(doc) || ' ' || length(doc) || ' ' || md5(blob) || ' ' || length(blob)
	       || ' ' || md5(info::text)
	  FROM ($big_values) v});

# what every row of big holds, digested
my $big_digest = q{
	SELECT string_agg(id || ':' || coalesce(small::text, '-') || ':'
	       || coalesce(md5(doc) || ' ' || length(doc), 'NULL') || ' '
	       || coalesce(md5(blob) || ' ' || length(blob), 'NULL') || ' '
	       || coalesce(md5(info::text), 'NULL'), E'\n' ORDER BY id)
	  FROM big};

wait_for_same_table([$ra, $rb], 'big');
is($rb->safe_psql('postgres', 'SELECT DISTINCT md5(doc) || \' \' || length(doc) || \' \' || md5(blob) || \' \' || length(blob) || \' \' || md5(info::text) FROM big'),
	$expect_big, 'megabyte text, bytea and jsonb values arrive intact in b');
cmp_ok($rb->safe_psql('postgres', "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'big'"),
	'>', 1_000_000, 'the large values are stored out of line (TOASTed) in b too');

# updates that leave the TOASTed columns alone: the peer receives them as
# "unchanged" and must keep its own copy
$ra->safe_psql('postgres', 'UPDATE big SET small = 1 WHERE id = 1');
$ra->safe_psql('postgres', 'UPDATE big SET small = 2, id = 20 WHERE id = 2');
$rb->safe_psql('postgres', 'UPDATE big SET small = 3 WHERE id = 3');
wait_for_same_table([$ra, $rb], 'big');
is($rb->safe_psql('postgres', "SELECT string_agg(id || '=' || small, ',' ORDER BY id) FROM big"),
	'1=1,3=3,20=2', 'updates of the small column arrive in both directions');
is($rb->safe_psql('postgres', $big_digest),
	join("\n", "1:1:$expect_big", "3:3:$expect_big", "20:2:$expect_big"),
	'TOASTed values an update left unchanged are intact in b, also when the key changed');
is($ra->safe_psql('postgres', $big_digest), $rb->safe_psql('postgres', $big_digest),
	'TOASTed values an update left unchanged are intact in a');

# an update that reaches a region where the row was deleted meanwhile
# recreates the row (the newer write wins): the unchanged TOASTed values
# must come back with it
$ra->safe_psql('postgres', "SELECT cosmosrep.pause_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
for my $node ($ra, $rb)
{
	$node->poll_query_until('postgres',
		"SELECT state = 'paused' AND worker_pid IS NULL FROM cosmosrep.replication_status")
	  or die $node->name . ' did not pause';
}
$rb->safe_psql('postgres', 'DELETE FROM big WHERE id = 3');
$ra->safe_psql('postgres', 'UPDATE big SET small = 4 WHERE id = 3');          # newer than the delete
$ra->safe_psql('postgres', "SELECT cosmosrep.resume_region('b')");
$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
ok(wait_for_value($rb, 'SELECT small FROM big WHERE id = 3', '4'),
	'an update newer than a delete recreates the row in the region that deleted it');
is($rb->safe_psql('postgres',
		"SELECT coalesce(md5(doc), 'NULL') || ' ' || coalesce(md5(blob), 'NULL') FROM big WHERE id = 3"),
	$ra->safe_psql('postgres', 'SELECT md5(doc) || \' \' || md5(blob) FROM big WHERE id = 3'),
	'the recreated row carries its TOASTed values, not NULLs');
ok(poll_briefly($ra, $big_digest, $rb->safe_psql('postgres', $big_digest), 10),
	'both regions hold the same big rows after the update/delete collision');
# make the regions equal again for what follows
$ra->safe_psql('postgres', 'DELETE FROM big WHERE id = 3');
ok(wait_for_value($rb, 'SELECT count(*) FROM big WHERE id = 3', '0'),
	'deleting the recreated row reaches b');

##########
# A transaction is applied whole
##########

for my $node ($ra, $rb)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE bulk (id int PRIMARY KEY, v text);
		CREATE TABLE local_only (id int PRIMARY KEY);
		INSERT INTO local_only SELECT generate_series(1, 5);
	});
}
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('bulk')");
$rb->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM cosmosrep.tables WHERE table_name = 'bulk'::regclass")
  or die 'enabling bulk did not reach b';

# b watches bulk in a tight loop, one snapshot per read, and records every
# distinct (row count / rows updated) it sees until the transaction is there
$rb->safe_psql('postgres', q{
	CREATE FUNCTION observe_bulk(timeout_s float8) RETURNS text LANGUAGE plpgsql AS $$
	DECLARE
		seen text[] := '{}';
		obs text;
		reads int := 0;
		deadline timestamptz := clock_timestamp() + timeout_s * interval '1 second';
	BEGIN
		LOOP
			SELECT count(*) || '/' || count(*) FILTER (WHERE v = 'updated')
			  INTO obs FROM public.bulk;
			reads := reads + 1;
			IF NOT obs = ANY (seen) THEN
				seen := seen || obs;
			END IF;
			EXIT WHEN obs = '1000/1000' OR clock_timestamp() > deadline;
		END LOOP;
		RETURN reads || ' ' || array_to_string(seen, ',');
	END $$;
});

my $writer = $ra->background_psql('postgres');
$writer->query_safe(q{
	BEGIN;
	INSERT INTO bulk SELECT g, 'inserted' FROM generate_series(1, 1000) g;
	UPDATE bulk SET v = 'updated';
});
my $observer = $rb->background_psql('postgres');
$observer->query_until(qr/observing/, "\\echo observing\nSELECT observe_bulk(120);\n");
$rb->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'SELECT observe_bulk%' AND state = 'active'")
  or die 'the observer did not start';
$writer->query_safe('COMMIT');
$writer->quit;
my $observed = $observer->query_safe("SELECT 'observer done'");
$observer->quit;
my ($reads, $seen) = $observed =~ /^(\d+) (\S+)\n/;
note "b read bulk $reads times and saw: $seen";
is($seen, '0/0,1000/1000',
	'a reader in b sees none or all of a 1000-row transaction of inserts and updates, never part');
cmp_ok($reads, '>', 10, 'the reader in b read many times while the transaction arrived');

# TRUNCATE, also together with a table that is not multi-region
$rb->safe_psql('postgres', 'INSERT INTO bulk VALUES (5000, \'from b\')');
ok(wait_for_value($ra, 'SELECT count(*) FROM bulk', '1001'), 'a row written in b reaches a');
$ra->safe_psql('postgres', 'TRUNCATE bulk, local_only');
ok(wait_for_value($rb, 'SELECT count(*) FROM bulk', '0'), 'TRUNCATE in a empties the table in b');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM local_only'), '5',
	'TRUNCATE does not reach a table that is not multi-region');
$ra->safe_psql('postgres', "INSERT INTO bulk VALUES (1, 'after truncate')");
wait_for_same_table([$ra, $rb], 'bulk');
is($rb->safe_psql('postgres', 'SELECT v FROM bulk'), 'after truncate',
	'replication continues after a TRUNCATE');

##########
# A table whose columns differ between regions
##########

$ra->safe_psql('postgres', 'CREATE TABLE skewed (id int PRIMARY KEY, v text)');
$rb->safe_psql('postgres', 'CREATE TABLE skewed (id int PRIMARY KEY, v text, extra int)');
$ra->safe_psql('postgres', "SELECT cosmosrep.enable_table('skewed')");
ok(wait_for_value($rb,
		"SELECT count(*) FROM cosmosrep.tables WHERE table_name = 'skewed'::regclass", '1'),
	'enabling a table whose columns differ still reaches b');
$ra->safe_psql('postgres', "INSERT INTO skewed VALUES (1, 'skewed row')");
$ra->safe_psql('postgres', "INSERT INTO bulk VALUES (2, 'behind skewed')");

ok(wait_for_value($rb, q{
		SELECT state = 'error' AND last_error LIKE 'table "public.skewed" has different columns in region "a"%'
		  FROM cosmosrep.replication_status WHERE source_region = 'a'}, 't'),
	'b reports that skewed has different columns, in state error');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM skewed'), '0',
	'a row of a table with different columns is not applied');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM bulk WHERE id = 2'), '0',
	'later transactions of the same region wait behind it (order is kept)');
ok($rb->log_contains('table "public.skewed" has different columns in region "a"'),
	'the error is in the server log of b');

# while the stream stays stuck, the failing worker is restarted with
# exponential backoff (1 s and up, as documented), not in a tight loop:
# watch three seconds of b's log
my $log_offset = -s $rb->logfile;
my $since = $rb->safe_psql('postgres', 'SELECT now()');
$rb->poll_query_until('postgres', "SELECT now() > '$since'::timestamptz + interval '3 seconds'");
my $failures = () = slurp_file($rb->logfile, $log_offset)
  =~ /ERROR:  table "public.skewed" has different columns/g;
note "the apply worker of b failed $failures times in 3 seconds";
cmp_ok($failures, '<=', 4, 'a failing apply worker is restarted with backoff, not in a loop');
$ra->safe_psql('postgres', "INSERT INTO skewed VALUES (2, 'while stuck')");

$rb->safe_psql('postgres', 'SET cosmosrep.ddl_replication = warn; ALTER TABLE skewed DROP COLUMN extra');
wait_for_same_table([$ra, $rb], 'skewed');
is($rb->safe_psql('postgres', "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM skewed"),
	'1=skewed row,2=while stuck',
	'once the columns match, every row of skewed arrives in b, nothing dropped');
ok(wait_for_value($rb, 'SELECT count(*) FROM bulk WHERE id = 2', '1'),
	'the transactions that waited behind it arrive too');
ok(wait_for_value($rb,
		"SELECT state FROM cosmosrep.replication_status WHERE source_region = 'a'", 'streaming'),
	'b streams from a again');

##########
# A table missing in one region
##########

$ra->safe_psql('postgres', q{
	CREATE TABLE only_in_a (id int PRIMARY KEY, v text);
	SELECT cosmosrep.enable_table('only_in_a');
	INSERT INTO only_in_a VALUES (1, 'one'), (2, 'two');
});
ok(wait_for_value($rb, q{
		SELECT last_error FROM cosmosrep.replication_status WHERE source_region = 'a'},
		'table "public.only_in_a" enabled in region "a" does not exist in this region'),
	'b reports that a table enabled in a does not exist in b');
$ra->safe_psql('postgres', "INSERT INTO only_in_a VALUES (3, 'three')");

$rb->safe_psql('postgres', 'CREATE TABLE only_in_a (id int PRIMARY KEY, v text)');
ok(wait_for_value($rb,
		"SELECT count(*) FROM cosmosrep.tables WHERE table_name = 'only_in_a'::regclass", '1'),
	'once the table exists in b, the enable arrives');
wait_for_same_table([$ra, $rb], 'only_in_a');
is($rb->safe_psql('postgres', 'SELECT count(*) FROM only_in_a'), '3',
	'and every row written in a meanwhile arrives');
ok(wait_for_value($rb,
		"SELECT state FROM cosmosrep.replication_status WHERE source_region = 'a'", 'streaming'),
	'b streams from a again after the table was created');

##########
# Output settings of the sending region
##########

# A region's own DateStyle and extra_float_digits must not change the
# values another region receives (the stream carries values as text).
# The settings are made for a's database, and b reconnects to a so that the
# walsender serving b starts with them.
sub reconnect_to_a
{
	$rb->safe_psql('postgres', "SELECT cosmosrep.pause_region('a')");
	$rb->poll_query_until('postgres',
		"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'a'")
	  or die 'b did not stop streaming from a';
	$rb->safe_psql('postgres', "SELECT cosmosrep.resume_region('a')");
}
$ra->safe_psql('postgres', q{
	ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
	ALTER DATABASE postgres SET extra_float_digits = 0;
});
reconnect_to_a();
$ra->safe_psql('postgres', q{
	INSERT INTO alltypes (id, c_date, c_timestamptz, c_float8)
	  VALUES (200, '2024-03-04', '2024-03-04 05:06:07+00', 0.1::float8 + 0.2::float8)});
$ra->safe_psql('postgres', q{INSERT INTO alltypes (id, c_date) VALUES (201, '2024-05-13')});
ok(poll_briefly($rb, 'SELECT count(*) FROM alltypes WHERE id IN (200, 201)', '2', 15),
	'rows written under another DateStyle arrive in b');
is($rb->safe_psql('postgres', q{
		SELECT c_date = '2024-03-04' AND c_timestamptz = '2024-03-04 05:06:07+00'
		       AND c_float8 = 0.1::float8 + 0.2::float8
		  FROM alltypes WHERE id = 200}), 't',
	'dates and floats keep their values whatever DateStyle and extra_float_digits the sender uses')
  or diag 'b holds: ' . $rb->safe_psql('postgres',
	'SELECT c_date, c_timestamptz, c_float8::text FROM alltypes WHERE id = 200');
$ra->safe_psql('postgres', q{
	ALTER DATABASE postgres RESET DateStyle;
	ALTER DATABASE postgres RESET extra_float_digits;
});
reconnect_to_a();
$ra->safe_psql('postgres', 'DELETE FROM alltypes WHERE id IN (200, 201)');
ok(wait_for_value($rb, 'SELECT count(*) FROM alltypes WHERE id IN (200, 201)', '0'),
	'replication from a recovers once its output settings are the defaults again');
wait_for_same_table([$ra, $rb], 'alltypes');
ok(wait_for_value($rb,
		"SELECT state FROM cosmosrep.replication_status WHERE source_region = 'a'", 'streaming'),
	'b streams from a at the end');

$_->stop for ($ra, $rb);
done_testing();
