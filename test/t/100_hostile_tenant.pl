# A hostile tenant: mallory can log in and owns one schema (app), nothing
# more.  She forges cosmosrep's messages of every prefix and shadows the
# operators and functions of cosmosrep's own queries; none of it reaches
# another region or runs as a superuser, and replication keeps streaming
# with the regions identical.  Then a peer that sends malformed messages
# (written here with the region's own key, as only a broken or hostile
# peer could) stops its link with a clear error, never the server.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CosmosRep::Test;

my ($r1, $r2) = make_group('r1', 'r2');
my @nodes = ($r1, $r2);

for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE public.orders (id int PRIMARY KEY, note text);
		CREATE ROLE mallory LOGIN;
		CREATE SCHEMA app AUTHORIZATION mallory;
		CREATE TABLE app.seen (who name, super boolean);
		ALTER TABLE app.seen OWNER TO mallory;
		GRANT INSERT ON app.seen TO PUBLIC;
	});
}
$r1->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('public.orders');
	INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g;
});
wait_for_same_table(\@nodes, 'orders');

sub as_mallory
{
	my ($node, $sql) = @_;
	return $node->psql('postgres', $sql, extra_params => [ '-U', 'mallory' ]);
}

sub hex_of { return unpack('H*', $_[0]); }

##################################################################
# Forged messages of every prefix, each also with a guessed tag
##################################################################

my $big = '9223372036854775807';
my %forged = (
	'cosmosrep.truncate' => "public\0orders\0$big\0",
	'cosmosrep.writes' => "$big\0r1\0",
	'cosmosrep.ddl' => "Apublic\0orders\0postgres\0\0\0\0$big\0",
	'cosmosrep.rows' => "Zgarbage",
	'cosmosrep.resolved' => "public\0orders\0$big\0merged\0mallory\0\x01",
	'cosmosrep.failover' => "r2\0" . "99\0$big\0",
	'cosmosrep.delete_base' => "\0" x 32,
);
my $log_offset = -s $r1->logfile;
for my $prefix (sort keys %forged)
{
	for my $content ($forged{$prefix}, $forged{$prefix} . "\x01\x02\x03\x04\x05\x06\x07\x08")
	{
		my ($rc, $out, $err) = as_mallory($r1,
			"SELECT pg_logical_emit_message(true, '$prefix', '\\x"
			  . hex_of($content) . "'::bytea)");
		is($rc, 0, "mallory can write a message with prefix $prefix (PUBLIC may)");
	}
}
as_mallory($r1, "SELECT pg_logical_emit_message(false, 'cosmosrep.stable', '\\x"
	  . hex_of("$big\0") . "'::bytea)");

# a write after the forgeries: once it arrives, they have been decoded
$r1->safe_psql('postgres', "INSERT INTO orders VALUES (101, 'after the forgeries')");
ok(wait_for_value($r2, 'SELECT count(*) FROM orders', '101'),
	'the orders table kept its rows in the other region (no forged truncate)');
my $r1_log = slurp_file($r1->logfile, $log_offset);
for my $prefix (sort(keys %forged), 'cosmosrep.stable')
{
	like($r1_log,
		qr/cosmosrep skipped a logical message with prefix "\Q$prefix\E" that cosmosrep did not write/,
		"the region of the forger logs the forged $prefix message it did not send");
}
$r2->safe_psql('postgres', "INSERT INTO orders VALUES (102, 'r2 still accepts writes')");
is($r2->safe_psql('postgres',
		"SELECT string_agg(region_name || '=' || failover_priority, ',' ORDER BY region_name)"
		  . ' FROM cosmosrep.regions'),
	$r1->safe_psql('postgres',
		"SELECT string_agg(region_name || '=' || failover_priority, ',' ORDER BY region_name)"
		  . ' FROM cosmosrep.regions'),
	'no forged failover priority reached the other region');
is($r2->safe_psql('postgres',
		"SELECT policy FROM cosmosrep.tables WHERE table_name = 'orders'::regclass"),
	'last_writer_wins', 'no forged policy change reached the other region');
ok_all_streaming(\@nodes, 'streams after the forged messages');
wait_for_same_table(\@nodes, 'orders');

# a table of hers with columns named as cosmosrep's is not multi-region
my ($lrc, $lout, $lerr) = as_mallory($r1, q{
	CREATE TABLE app.lookalike (id int PRIMARY KEY, _cr_version bigint,
		_cr_base bigint, _cr_region smallint, _cr_config bigint);
	INSERT INTO app.lookalike VALUES (1, 9223372036854775807, 0, 2, 1)});
is($lrc, 0, 'mallory writes a table with columns named as cosmosrep\'s') or diag($lerr);
$r1->safe_psql('postgres', "INSERT INTO orders VALUES (104, 'after the lookalike')");
ok(wait_for_value($r2, 'SELECT count(*) FROM orders WHERE id = 104', '1'),
	'a lookalike table is not sent to other regions (the link goes on)');

##################################################################
# Shadowed operators and functions around cosmosrep's own queries
##################################################################

# every operator and function a catalog query could resolve by name, in
# mallory's schema, first in her search_path: each records as whom it ran
# and tries to make her a superuser
my $traps = q{
CREATE FUNCTION app.trap() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO app.seen SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
	BEGIN
		EXECUTE 'ALTER ROLE mallory SUPERUSER';
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	RETURN true;
END $$;
DO $$
DECLARE
	pair text[];
BEGIN
	FOREACH pair SLICE 1 IN ARRAY ARRAY[['regclass', 'oid'], ['oid', 'oid'], ['oid', 'regclass'],
		['text', 'text'], ['name', 'text'], ['smallint', 'smallint'], ['smallint', 'integer'],
		['bigint', 'bigint'], ['bytea', 'bytea'], ['boolean', 'boolean'], ['regclass', 'regclass']]
	LOOP
		EXECUTE format('CREATE FUNCTION app.eq(%1$s, %2$s) RETURNS boolean LANGUAGE sql'
			' AS $f$ SELECT app.trap() AND $1 OPERATOR(pg_catalog.=) $2 $f$', pair[1], pair[2]);
		EXECUTE format('CREATE OPERATOR app.= (LEFTARG = %s, RIGHTARG = %s, FUNCTION = app.eq)',
			pair[1], pair[2]);
		EXECUTE format('CREATE FUNCTION app.lt(%1$s, %2$s) RETURNS boolean LANGUAGE sql'
			' AS $f$ SELECT app.trap() AND $1 OPERATOR(pg_catalog.<) $2 $f$', pair[1], pair[2]);
		EXECUTE format('CREATE OPERATOR app.< (LEFTARG = %s, RIGHTARG = %s, FUNCTION = app.lt)',
			pair[1], pair[2]);
	END LOOP;
END $$;
CREATE FUNCTION app.now() RETURNS timestamptz LANGUAGE sql
	AS $f$ SELECT pg_catalog.now() WHERE app.trap() $f$;
CREATE FUNCTION app.max(bigint) RETURNS bigint LANGUAGE sql
	AS $f$ SELECT $1 WHERE app.trap() $f$;
CREATE FUNCTION app.quote_ident(text) RETURNS text LANGUAGE sql
	AS $f$ SELECT pg_catalog.quote_ident($1) WHERE app.trap() $f$;
CREATE TABLE app.mine (id int PRIMARY KEY, v text);
CREATE FUNCTION app.valid(int) RETURNS boolean LANGUAGE sql AS $f$ SELECT app.trap() $f$;
CREATE DOMAIN app.code AS int CHECK (app.valid(VALUE));
CREATE TABLE app.coded (id app.code PRIMARY KEY, v text);
};
my ($rc, $out, $err) = as_mallory($r1, $traps);
is($rc, 0, 'mallory shadows operators and functions in her schema') or diag($err);
($rc, $out, $err) = as_mallory($r2, $traps);
is($rc, 0, 'mallory has the same objects in the other region') or diag($err);

# every cosmosrep function PUBLIC may call, with her path first
for my $call (
	'SELECT cosmosrep.check_table(0)',
	"SELECT cosmosrep.check_table('app.mine'::regclass)",
	"SELECT cosmosrep.enable_table('app.mine')",
	"SELECT cosmosrep.alter_table_policy('app.mine', 'manual')",
	"INSERT INTO app.mine VALUES (1, 'one')",
	'DELETE FROM app.mine',
	"SELECT cosmosrep.disable_table('app.mine')",
	'SELECT cosmosrep.session_token()',
	'SELECT cosmosrep.purge_horizon()',
	'SELECT * FROM cosmosrep.tables',
	'SELECT * FROM cosmosrep.conflicts',
	'SELECT * FROM cosmosrep.replication_status',
	'SELECT cosmosrep.resolve_conflict(1, \'local\')',
	"SELECT cosmosrep.enable_table('app.coded')",
	"INSERT INTO app.coded VALUES (7, 'seven'), (8, 'eight')",
	'DELETE FROM app.coded WHERE id = 7')
{
	as_mallory($r1, "SET search_path = app, pg_catalog; $call");
}
ok(wait_for_value($r2, 'SELECT count(*) FROM cosmosrep.tombstones'
		  . " WHERE table_name = 'app.coded'::regclass", '1'),
	'the delete of a key of her domain type reached the other region');

# a superuser reads the tombstones: the keys of her domain are decoded
# as her, not as the reader
for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT key FROM cosmosrep.tombstones'
			  . " WHERE table_name = 'app.coded'::regclass"),
		'(7)', $node->name . ': a superuser reads the tombstone of a key of her domain type');
}
is($r1->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"),
	'f', 'mallory is no superuser after shadowing operators and functions');
is($r1->safe_psql('postgres', 'SELECT count(*) FROM app.seen WHERE super'),
	'0', 'no shadowed operator or function of hers ran as a superuser');
is($r2->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"),
	'f', 'mallory is no superuser in the other region either');
ok_all_streaming(\@nodes, 'streams after the shadowing attempts');

##################################################################
# A resolver of hers that reads another tenant's table
##################################################################

my $ledger = q{
CREATE TABLE app.ledger (id int PRIMARY KEY, amount int);
CREATE TABLE app.loot (what text);
CREATE FUNCTION app.steal(incoming app.ledger, existing app.ledger,
                          is_tombstone boolean, conflicting app.ledger[])
RETURNS app.ledger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO app.loot SELECT s::text FROM public.secrets s;
	RETURN incoming;
END $$;
};
for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE ROLE bob;
		CREATE TABLE public.secrets (code text);
		INSERT INTO public.secrets VALUES ('the vault code of bob');
		ALTER TABLE public.secrets OWNER TO bob;
	});
	($rc, $out, $err) = as_mallory($node, $ledger);
	is($rc, 0, $node->name . ': mallory writes a resolver that reads bob\'s table') or diag($err);
}
($rc, $out, $err) = as_mallory($r1, q{
	SELECT cosmosrep.enable_table('app.ledger', policy => 'custom', resolver => 'app.steal');
	INSERT INTO app.ledger VALUES (1, 10);
});
is($rc, 0, 'mallory makes her ledger multi-region with her resolver') or diag($err);
ok(wait_for_value($r2, 'SELECT count(*) FROM app.ledger', '1'),
	'her ledger reached the other region');
partition_regions(\@nodes);
as_mallory($r1, 'UPDATE app.ledger SET amount = 11');
as_mallory($r2, 'UPDATE app.ledger SET amount = 12');
heal_regions(\@nodes);
# the resolver runs in the arbiter, r1, alone
ok(wait_for_value($r1,
		"SELECT count(*) FROM cosmosrep.conflicts WHERE table_name = 'app.ledger'::regclass"
		  . " AND resolution = 'error' AND error ~ 'permission denied for table secrets'", '1'),
	'r1: the resolver ran as mallory and was refused bob\'s table');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM app.loot'), '0',
		$node->name . ': nothing of bob\'s table reached her');
}
ok_all_streaming(\@nodes, 'streams after her resolver failed');

# the failed resolution waits in the feed; with her resolver mended
# everywhere and the entry resolved, the regions agree
for my $node (@nodes)
{
	as_mallory($node, q{
		CREATE OR REPLACE FUNCTION app.steal(incoming app.ledger, existing app.ledger,
		                                     is_tombstone boolean, conflicting app.ledger[])
		RETURNS app.ledger LANGUAGE plpgsql AS $$ BEGIN RETURN incoming; END $$});
}
($rc, $out, $err) = as_mallory($r1, q{
	SELECT cosmosrep.resolve_conflict(conflict_id, remote_version)
	  FROM cosmosrep.conflict_feed WHERE table_name = 'app.ledger'::regclass});
is($rc, 0, 'mallory resolves the entry of her ledger from the feed') or diag($err);
wait_for_same_table(\@nodes, 'app.ledger');

##################################################################
# A domain of hers that refuses in one region what it accepts in another
##################################################################

for my $node (@nodes)
{
	my $refused = $node == $r2 ? '666' : '-1';
	($rc, $out, $err) = as_mallory($node, qq{
		CREATE FUNCTION app.allowed(int) RETURNS boolean LANGUAGE sql IMMUTABLE
			AS \$f\$ SELECT \$1 <> $refused \$f\$;
		CREATE DOMAIN app.tagcode AS int CHECK (app.allowed(VALUE));
		CREATE TABLE app.tagged (id int PRIMARY KEY, tag app.tagcode);});
	is($rc, 0, $node->name . ': mallory makes a domain that differs by region') or diag($err);
}
as_mallory($r1, q{SELECT cosmosrep.enable_table('app.tagged');
	INSERT INTO app.tagged VALUES (1, 666)});
$r1->safe_psql('postgres', "INSERT INTO orders VALUES (200, 'after the refused row')");
ok(wait_for_value($r2, 'SELECT count(*) FROM orders WHERE id = 200', '1'),
	'a row that her domain refuses in one region does not stop the link for everyone');
like($r2->safe_psql('postgres', q{SELECT error FROM cosmosrep.conflict_feed
		WHERE table_name = 'app.tagged'::regclass}),
	qr/violates check constraint.*the row cannot be read in this region/,
	'the refused row waits in the feed with both errors');
ok_all_streaming(\@nodes, 'streams after a row that cannot be read in one region');
$r2->safe_psql('postgres', q{SELECT cosmosrep.discard_conflict(conflict_id)
	FROM cosmosrep.conflict_feed WHERE table_name = 'app.tagged'::regclass});
as_mallory($r1, 'DELETE FROM app.tagged');
ok(wait_for_value($r2, 'SELECT count(*) FROM cosmosrep.conflict_feed', '0'),
	'the entry is discarded and the feed is empty');

##################################################################
# Malformed messages from a peer: the link stops, the server does not
##################################################################

# SipHash-2-4 (signing.c): what only a region's own key can produce
sub rotl
{
	use integer;
	my ($x, $b) = @_;
	return ($x << $b) | (($x >> (64 - $b)) & ((1 << $b) - 1));
}

sub siphash24
{
	use integer;
	no warnings 'portable';
	my ($key, $data) = @_;
	my ($k0, $k1) = unpack('q<q<', $key);
	my @v = ($k0 ^ 0x736f6d6570736575, $k1 ^ 0x646f72616e646f6d,
		$k0 ^ 0x6c7967656e657261, $k1 ^ 0x7465646279746573);
	my $round = sub {
		$v[0] += $v[1]; $v[1] = rotl($v[1], 13); $v[1] ^= $v[0]; $v[0] = rotl($v[0], 32);
		$v[2] += $v[3]; $v[3] = rotl($v[3], 16); $v[3] ^= $v[2];
		$v[0] += $v[3]; $v[3] = rotl($v[3], 21); $v[3] ^= $v[0];
		$v[2] += $v[1]; $v[1] = rotl($v[1], 17); $v[1] ^= $v[2]; $v[2] = rotl($v[2], 32);
	};
	my $len = length $data;
	my $full = $len - $len % 8;
	for (my $i = 0; $i <= $full; $i += 8)
	{
		my $m = $i < $full ? unpack('q<', substr($data, $i, 8))
		  : unpack('q<', substr($data, $i) . ("\0" x (7 - $len % 8)) . chr($len & 0xff));
		$v[3] ^= $m;
		$round->();
		$round->();
		$v[0] ^= $m;
	}
	$v[2] ^= 0xff;
	$round->() for 1 .. 4;
	return pack('q<', $v[0] ^ $v[1] ^ $v[2] ^ $v[3]);
}

my $key = slurp_file($r1->data_dir . '/cosmosrep.key');
is(length($key), 16, 'the region keeps a 128-bit message key in its data directory');

# write a message as cosmosrep would, with r1's key
sub emit_signed
{
	my ($prefix, $content, $transactional) = @_;
	$transactional //= 1;
	my $tag = siphash24($key, ($transactional ? "\x01" : "\x00") . "$prefix\0$content");
	$r1->safe_psql('postgres',
		"SELECT pg_logical_emit_message(" . ($transactional ? 'true' : 'false')
		  . ", '$prefix', '\\x" . hex_of($content . $tag) . "'::bytea)");
	return $r1->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
}

# the signer above is cosmosrep's: a well-formed priority change applies
my $version = $r1->safe_psql('postgres', 'SELECT cosmosrep.next_version()');
emit_signed('cosmosrep.failover', "r2\0" . "7\0$version\0");
ok(wait_for_value($r2,
		"SELECT failover_priority FROM cosmosrep.regions WHERE region_name = 'r2'", '7'),
	'a message signed with the region key is applied (the test signs as cosmosrep does)');

my $marker = 1000;
my $r2_pid = $r2->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my @malformed = (
	[ 'cosmosrep.ddl', "Apublic\0orders\0postgres\0\0\0\0$version\0", 1,
		'malformed cosmosrep DDL message', 'a policy change with no policy' ],
	[ 'cosmosrep.ddl', "Xpublic\0orders\0postgres\0last_writer_wins\0\0\0$version\0", 1,
		'malformed cosmosrep DDL message', 'a DDL of no known action' ],
	[ 'cosmosrep.ddl', "Apublic\0orders\0postgres\0bogus\0\0\0$version\0", 1,
		'unknown conflict policy "bogus"', 'a policy change to an unknown policy' ],
	[ 'cosmosrep.ddl', "Apublic\0orders\0postgres\0last_writer_wins\0\0\0many\0", 1,
		'malformed cosmosrep DDL message', 'a configuration version that is no number' ],
	[ 'cosmosrep.ddl', "Apublic\0orders", 1,
		'malformed cosmosrep DDL message', 'a DDL cut short' ],
	[ 'cosmosrep.truncate', "public\0orders\0-5\0", 1,
		'malformed truncate message', 'a truncate at a negative version' ],
	[ 'cosmosrep.truncate', "\0orders\0$version\0", 1,
		'malformed truncate message', 'a truncate of a table with no schema name' ],
	[ 'cosmosrep.failover', "r2\0" . "0\0$version\0", 1,
		'malformed failover priority message', 'a failover priority of 0' ],
	[ 'cosmosrep.writes', "soon\0r1\0", 1,
		'malformed write regions message', 'a write regions change with no version' ],
	[ 'cosmosrep.resolved', "public\0orders\0$version\0pending\0postgres\0\x01", 1,
		'malformed resolved message', 'a resolution that resolves nothing' ],
	[ 'cosmosrep.rows', "Zgarbage", 1,
		'invalid message type "Z" in the rows of an enabled table', 'rows that are no rows' ],
	[ 'cosmosrep.rows', "I\0\0\x12\x34N\0\0", 1,
		'no relation message for remote relation', 'rows of a relation never described' ],
	[ 'cosmosrep.stable', "later\0", 0,
		'malformed stable version message', 'a stable version that is no number' ],
);
for my $case (@malformed)
{
	my ($prefix, $content, $transactional, $error, $what) = @$case;
	my $end = emit_signed($prefix, $content, $transactional);

	ok(wait_for_value($r2,
			"SELECT strpos(last_error, '$error') > 0 FROM cosmosrep.replication_status"
			  . " WHERE source_region = 'r1'", 't'),
		"$what stops the link with a clear error")
	  or diag($r2->safe_psql('postgres',
			"SELECT last_error FROM cosmosrep.replication_status"));
	is($r2->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $r2_pid,
		"$what does not restart the server");
	is((as_mallory($r2, 'SELECT last_error FROM cosmosrep.replication_status'))[1],
		'<insufficient privilege>', "mallory does not read the error of $what");

	# step over the message: the operator's way out
	$r2->safe_psql('postgres', "SELECT cosmosrep.pause_region('r1')");
	$r2->poll_query_until('postgres',
		"SELECT worker_pid IS NULL FROM cosmosrep.replication_status WHERE source_region = 'r1'")
	  or die 'the link did not pause';
	$r2->safe_psql('postgres',
		"SELECT pg_replication_origin_advance('cosmosrep_r1', '$end');"
		  . " SELECT cosmosrep.resume_region('r1')");
	$marker++;
	$r1->safe_psql('postgres', "INSERT INTO orders VALUES ($marker, 'after a malformed message')");
	ok(wait_for_value($r2, "SELECT count(*) FROM orders WHERE id = $marker", '1'),
		"the link streams again once $what is stepped over");
}
unlike(slurp_file($r2->logfile), qr/terminated by signal/,
	'no malformed message crashed a process of the receiving region');
ok_all_streaming(\@nodes, 'streams again once the malformed messages are stepped over');
wait_for_same_table(\@nodes, 'orders');

$_->stop for @nodes;
done_testing();
