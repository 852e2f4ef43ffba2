# Declared conflict policies are part of the database: pg_dump and a
# restore into a new database keep the region, every table's policy, path
# and resolver, the rows with their versions, and a working row trigger.
use strict;
use warnings;

use File::Spec;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_region('dumpsrc', create => 1);

$node->safe_psql('postgres', q{
	CREATE TABLE accounts (id int PRIMARY KEY, balance numeric, updated_at timestamptz);
	INSERT INTO accounts
		SELECT g, g * 10, '2024-01-01 00:00+00'::timestamptz + g * interval '1 minute'
		  FROM generate_series(1, 50) g;
	SELECT cosmosrep.enable_table('accounts', policy => 'last_writer_wins', path => 'updated_at');
	UPDATE accounts SET balance = balance + 1, updated_at = now() WHERE id <= 10;

	CREATE TABLE ledger (id int PRIMARY KEY, amount numeric);
	CREATE FUNCTION resolve_ledger(incoming ledger, existing ledger,
	                               is_tombstone boolean, conflicting ledger[])
	RETURNS ledger LANGUAGE plpgsql AS $$
	BEGIN
	    IF is_tombstone THEN
	        RETURN existing;
	    END IF;
	    incoming.amount := incoming.amount + existing.amount;
	    RETURN incoming;
	END
	$$;
	SELECT cosmosrep.enable_table('ledger', policy => 'custom', resolver => 'resolve_ledger');
	INSERT INTO ledger SELECT g, g FROM generate_series(1, 20) g;
	UPDATE ledger SET amount = -amount WHERE id % 2 = 0;
	DELETE FROM ledger WHERE id > 15;

	CREATE SCHEMA "Sales Dept";
	CREATE TABLE "Sales Dept"."Order Lines" ("Line No" int PRIMARY KEY, qty int);
	INSERT INTO "Sales Dept"."Order Lines" VALUES (1, 1), (2, 2);
	SELECT cosmosrep.enable_table('"Sales Dept"."Order Lines"', policy => 'manual');
});

ok($node->safe_psql('postgres',
		'SELECT bool_and(_cr_base > 0) FROM accounts WHERE id <= 10'),
	'the source has updated rows, whose base versions must survive too');

##########
# Dump and restore
##########

my $bindir = $node->config_data('--bindir');
my $dump = File::Spec->catfile(PostgreSQL::Test::Utils::tempdir(), 'postgres.sql');

$node->command_ok(
	[
		File::Spec->catfile($bindir, 'pg_dump'),
		'--host', $node->host, '--port', $node->port,
		'--dbname', 'postgres', '--file', $dump
	],
	'pg_dump dumps a database with multi-region tables');

$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[
		File::Spec->catfile($bindir, 'psql'),
		'-X', '--quiet', '--set', 'ON_ERROR_STOP=1',
		'--host', $node->host, '--port', $node->port,
		'--dbname', 'restored', '--file', $dump
	],
	'psql restores the dump into a new database without errors');

# the same query on both databases gives the same answer
sub same_in_both
{
	my ($query, $name) = @_;
	my $source = $node->safe_psql('postgres', $query);
	my $restored = $node->safe_psql('restored', $query);
	isnt($source, '', "$name (not empty)");
	is($restored, $source, $name);
	return;
}

same_in_both(q{
	SELECT table_name::text, policy, coalesce(path, '-'), coalesce(resolver::text, '-'), enabled_at
	  FROM cosmosrep.tables ORDER BY table_name::text},
	'cosmosrep.tables shows the same tables, policies, paths and resolvers');
is($node->safe_psql('restored', q{
	SELECT string_agg(table_name::text || ' ' || policy || ' ' || coalesce(path, '-')
	                  || ' ' || coalesce(resolver::text, '-'), E'\n' ORDER BY table_name::text)
	  FROM cosmosrep.tables}),
	join("\n",
		'"Sales Dept"."Order Lines" manual - -',
		'accounts last_writer_wins updated_at -',
		'ledger custom - resolve_ledger(ledger,ledger,boolean,ledger[])'),
	'the restored policies are the declared ones');

same_in_both(q{
	SELECT region_id, region_name, is_local, dsn, failover_priority, created_at
	  FROM cosmosrep.regions ORDER BY region_id},
	'cosmosrep.regions shows the same region');

for my $table ('accounts', 'ledger', '"Sales Dept"."Order Lines"')
{
	is(table_checksum($node, $table, 'restored'), table_checksum($node, $table, 'postgres'),
		"$table has the same rows with the same versions, bases and regions");
}

##########
# The restored database is a working region
##########

is($node->safe_psql('restored', q{
	SELECT string_agg(tgname || ' ' || tgenabled::text, ', ' ORDER BY tgname) FROM pg_trigger
	 WHERE tgrelid = 'accounts'::regclass AND NOT tgisinternal}),
	'cosmosrep_insert_check O, cosmosrep_stamp O, cosmosrep_truncate O', 'the row, insert check and truncate triggers are restored and enabled');

$node->safe_psql('restored', q{
	CREATE TABLE before_writes AS
		SELECT max(_cr_version) AS newest,
		       (SELECT _cr_version FROM accounts WHERE id = 20) AS row20
		  FROM accounts;
	INSERT INTO accounts VALUES (1000, 1, now());
	UPDATE accounts SET balance = 0 WHERE id = 20;
});
is($node->safe_psql('restored', q{
	SELECT _cr_version > (SELECT newest FROM before_writes)
	       AND _cr_base = 0
	       AND _cr_region = 1
	  FROM accounts WHERE id = 1000}),
	't', 'an INSERT in the restored database gets a new version from the local region');
is($node->safe_psql('restored', q{
	SELECT _cr_version > (SELECT newest FROM before_writes)
	       AND _cr_base = (SELECT row20 FROM before_writes)
	  FROM accounts WHERE id = 20}),
	't', 'an UPDATE in the restored database gets a new version based on the restored one');

my ($ret, $stdout, $stderr) = $node->psql('restored',
	q{SELECT cosmosrep.enable_table('ledger')});
like($stderr, qr/table "ledger" is already multi-region/,
	'the restored configuration is live: enabling a restored table again is refused');

$node->safe_psql('restored',
	q{SELECT cosmosrep.alter_table_policy('ledger', 'manual')});
is($node->safe_psql('restored', q{SELECT policy FROM cosmosrep.tables WHERE table_name = 'ledger'::regclass}),
	'manual', 'the policy of a restored table can be changed');
is($node->safe_psql('postgres', q{SELECT policy FROM cosmosrep.tables WHERE table_name = 'ledger'::regclass}),
	'custom', 'the source database keeps its own policy');

$node->stop;
done_testing();
