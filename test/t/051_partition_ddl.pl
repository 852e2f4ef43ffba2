# Partitions of a multi-region table change in one region while the
# others write: CREATE TABLE ... PARTITION OF (of the table and of a
# sub-partitioned partition), ATTACH PARTITION and DETACH PARTITION travel
# at their place in the stream and are replayed as the table's owner, so
# every region ends with the same partitions and the same rows.  A
# partition statement never changes which rows the table holds: attaching
# a table with rows and detaching a partition with rows are refused, and
# rows a region still holds in a partition detached elsewhere (written
# there concurrently) stay in the table.  TRUNCATE and DROP TABLE of a
# partition alone are refused.  A region whose layout does not take a
# replayed statement waits with the error until it does.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CosmosRep::Test;

my @nodes = make_group('a', 'b', 'c');
my ($ra, $rb, $rc) = @nodes;

# the tenant's table, alike in every region: list-partitioned, with eu
# sub-partitioned by range (only its low range yet)
for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE ROLE mallory LOGIN;
		CREATE SCHEMA app AUTHORIZATION mallory;
		SET ROLE mallory;
		CREATE TABLE app.orders (region text, id int, qty int, PRIMARY KEY (region, id))
		    PARTITION BY LIST (region);
		CREATE TABLE app.orders_eu PARTITION OF app.orders FOR VALUES IN ('eu')
		    PARTITION BY RANGE (id);
		CREATE TABLE app.orders_eu_low PARTITION OF app.orders_eu FOR VALUES FROM (MINVALUE) TO (100);
		CREATE TABLE app.orders_us PARTITION OF app.orders FOR VALUES IN ('us');
	});
}
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('app.orders');
	INSERT INTO app.orders VALUES ('eu', 1, 1), ('us', 1, 1);
});
wait_for_same_table(\@nodes, 'app.orders');

# the partitions of app.orders, with their parents, bounds and owners
sub layout
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT string_agg(c.relname || '<' || p.relname || ' '
		                  || pg_get_expr(c.relpartbound, c.oid) || ' '
		                  || pg_get_userbyid(c.relowner), E'\n' ORDER BY c.relname)
		  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		  JOIN pg_class p ON p.oid = i.inhparent
		 WHERE p.relnamespace = 'app'::regnamespace});
}

# the rows of app.orders with the partition that holds them and every
# column, cosmosrep's included
sub rows_in
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT string_agg(tableoid::regclass || ':' || t::text, E'\n' ORDER BY t::text)
		  FROM app.orders t});
}

# the region's error from region $from, once there is one
sub wait_for_error
{
	my ($node, $from, $pattern) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM cosmosrep.replication_status
		 WHERE source_region = '$from' AND last_error ~ '$pattern'});
}

# 1. New partitions, made in a (of the table) and in b (of the
# sub-partitioned eu), each written in the statement's own transaction,
# while the other regions write rows of the partitions they have.
partition_regions(\@nodes);
$ra->safe_psql('postgres', q{
	SET ROLE mallory;
	BEGIN;
	CREATE TABLE app.orders_asia PARTITION OF app.orders FOR VALUES IN ('asia');
	INSERT INTO app.orders VALUES ('asia', 1, 1);
	COMMIT;
});
# b's change of the same table waits until a's has arrived (ddl_fence.c)
my ($ret, $out, $err) = $rb->psql('postgres', q{
	SET cosmosrep.ddl_fence_timeout = '1s';
	SET ROLE mallory;
	CREATE TABLE app.orders_eu_high PARTITION OF app.orders_eu FOR VALUES FROM (100) TO (MAXVALUE)});
like($err, qr/ERROR:  multi-region table "orders" is being changed by region "a"/,
	'b cannot add a partition while a\'s has not arrived (it waits for it up to cosmosrep.ddl_fence_timeout)');
$rc->safe_psql('postgres', "INSERT INTO app.orders VALUES ('us', 2, 1), ('eu', 2, 1)");
heal_regions(\@nodes);
# once the links resume, b's change waits for a's to arrive, then runs
$rb->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE TABLE app.orders_eu_high PARTITION OF app.orders_eu FOR VALUES FROM (100) TO (MAXVALUE);
	INSERT INTO app.orders VALUES ('eu', 150, 1);
});
wait_for_same_table(\@nodes, 'app.orders');
ok_all_streaming(\@nodes, 'streams after partitions were created in two regions');
my $expected_layout = join("\n",
	q{orders_asia<orders FOR VALUES IN ('asia') mallory},
	q{orders_eu<orders FOR VALUES IN ('eu') mallory},
	q{orders_eu_high<orders_eu FOR VALUES FROM (100) TO (MAXVALUE) mallory},
	q{orders_eu_low<orders_eu FOR VALUES FROM (MINVALUE) TO (100) mallory},
	q{orders_us<orders FOR VALUES IN ('us') mallory});
for my $node (@nodes)
{
	is(layout($node), $expected_layout,
		$node->name . ': every region has the partitions created in a and b, made by the table\'s owner');
	is($node->safe_psql('postgres', q{
			SELECT string_agg(tableoid::regclass || ':' || id, ',' ORDER BY id)
			  FROM app.orders WHERE region IN ('asia', 'eu') AND id IN (1, 150)}),
		'app.orders_asia:1,app.orders_eu_low:1,app.orders_eu_high:150',
		$node->name . ': the rows written with the new partitions are in them');
	is($node->safe_psql('postgres', q{
			SELECT count(*) FROM cosmosrep.conflict_feed}),
		'0', $node->name . ': no row waited for a partition');
}

# CREATE TABLE IF NOT EXISTS ... PARTITION OF that finds a local table of
# that name changes nothing here, and nothing elsewhere
$ra->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE TABLE app.orders_local (LIKE app.orders);
	CREATE TABLE IF NOT EXISTS app.orders_local PARTITION OF app.orders FOR VALUES IN ('local');
	INSERT INTO app.orders VALUES ('us', 3, 1);
});
wait_for_same_table(\@nodes, 'app.orders');
for my $node ($rb, $rc)
{
	is($node->safe_psql('postgres', "SELECT to_regclass('app.orders_local') IS NULL"),
		't', $node->name . ': a CREATE TABLE IF NOT EXISTS that made no partition is not replayed');
}

# 2. ATTACH PARTITION of an empty table made in every region; c attaches
# it while a writes, then writes a row of it.
for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		SET ROLE mallory;
		CREATE TABLE app.orders_sa (LIKE app.orders);
		CREATE TABLE app.orders_af (LIKE app.orders);
	});
}
partition_regions(\@nodes);
$rc->safe_psql('postgres', q{
	SET ROLE mallory;
	ALTER TABLE app.orders ATTACH PARTITION app.orders_sa FOR VALUES IN ('sa');
	INSERT INTO app.orders VALUES ('sa', 1, 1);
});
$ra->safe_psql('postgres', "UPDATE app.orders SET qty = 2 WHERE region = 'us'");
heal_regions(\@nodes);
wait_for_same_table(\@nodes, 'app.orders');
ok_all_streaming(\@nodes, 'streams after c attached a partition');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', q{
			SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'app.orders_sa'::regclass}),
		q{FOR VALUES IN ('sa')}, $node->name . ': the partition attached in c is attached here');
	is($node->safe_psql('postgres', q{
			SELECT string_agg(tableoid::regclass || ':' || id, ',') FROM app.orders WHERE region = 'sa'}),
		'app.orders_sa:1', $node->name . ': and holds the row written after the attach');
}

# attaching a table that holds rows is refused: its rows would be in the
# table in one region only
$ra->safe_psql('postgres', q{
	INSERT INTO app.orders_af (region, id, qty, _cr_version, _cr_base, _cr_region, _cr_config)
	VALUES ('af', 1, 1, 1, 0, 1, 1)});
($ret, $out, $err) = $ra->psql('postgres', q{
	SET ROLE mallory;
	ALTER TABLE app.orders ATTACH PARTITION app.orders_af FOR VALUES IN ('af')});
like($err, qr/ERROR:  table "orders_af" attached to multi-region table "orders" holds rows
DETAIL:  Its rows would enter the multi-region table in this region only.
HINT:  Attach an empty table, then insert the rows through the partitioned table, which sends them to every region./,
	'attaching a table that holds rows is refused with its message');

# a table with rows in another region: the attach made in b where it is
# empty waits in a with the error, until a empties its own
$rb->safe_psql('postgres', q{
	SET ROLE mallory;
	ALTER TABLE app.orders ATTACH PARTITION app.orders_af FOR VALUES IN ('af');
	INSERT INTO app.orders VALUES ('af', 2, 1);
});
ok(wait_for_error($ra, 'b',
		'table "orders_af" attached to multi-region table "orders" in region "b" holds rows in this region'),
	'a replayed attach of a table that holds rows here stops with the error in replication_status');
is($ra->safe_psql('postgres', q{
		SELECT count(*) FROM pg_inherits WHERE inhrelid = 'app.orders_af'::regclass}),
	'0', 'and is not applied');
$ra->safe_psql('postgres', 'DELETE FROM app.orders_af');
wait_for_same_table(\@nodes, 'app.orders');
ok_all_streaming(\@nodes, 'replication resumes once the table is empty');
is($ra->safe_psql('postgres', q{
		SELECT tableoid::regclass FROM app.orders WHERE region = 'af'}),
	'app.orders_af', 'and the attach and the row after it are applied');

# 3. DETACH PARTITION.  Refused while the partition holds rows, and
# CONCURRENTLY is refused.
($ret, $out, $err) = $ra->psql('postgres', q{
	SET ROLE mallory;
	ALTER TABLE app.orders DETACH PARTITION app.orders_sa});
like($err, qr/ERROR:  partition "orders_sa" of multi-region table "orders" holds rows
DETAIL:  Detaching it would remove its rows from the multi-region table in this region only.
HINT:  Delete its rows with DELETE, which every region applies, then detach it./,
	'detaching a partition that holds rows is refused with its message');
($ret, $out, $err) = $ra->psql('postgres', q{
	SET ROLE mallory;
	ALTER TABLE app.orders DETACH PARTITION app.orders_sa CONCURRENTLY});
like($err, qr/ERROR:  DETACH PARTITION CONCURRENTLY of multi-region table "orders" cannot be replicated
HINT:  Leave out CONCURRENTLY./,
	'DETACH PARTITION CONCURRENTLY is refused with its message');

# a default partition (made in a, so everywhere) for what is detached
$ra->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE TABLE app.orders_rest PARTITION OF app.orders DEFAULT;
	DELETE FROM app.orders WHERE region = 'sa';
});
wait_for_same_table(\@nodes, 'app.orders');

# a detaches the empty orders_sa while b writes a row of it: b keeps the
# row in the table (in its default partition), as a does when the row
# arrives after the detach
partition_regions(\@nodes);
$rb->safe_psql('postgres', "INSERT INTO app.orders VALUES ('sa', 10, 1)");
$ra->safe_psql('postgres', q{
	SET ROLE mallory;
	ALTER TABLE app.orders DETACH PARTITION app.orders_sa;
	INSERT INTO app.orders VALUES ('sa', 11, 1);
});
is($rb->safe_psql('postgres', q{
		SELECT tableoid::regclass FROM app.orders WHERE region = 'sa'}),
	'app.orders_sa', 'b holds its row in its partition before the detach arrives');
heal_regions(\@nodes);
wait_for_same_table(\@nodes, 'app.orders');
ok_all_streaming(\@nodes, 'streams after a detached a partition that b wrote');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', q{
			SELECT count(*) FROM pg_inherits WHERE inhrelid = 'app.orders_sa'::regclass}),
		'0', $node->name . ': the partition detached in a is detached');
	is($node->safe_psql('postgres', q{
			SELECT string_agg(tableoid::regclass || ':' || id, ',' ORDER BY id)
			  FROM app.orders WHERE region = 'sa'}),
		'app.orders_rest:10,app.orders_rest:11',
		$node->name . ': the rows written while it was detached stay in the table');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM app.orders_sa'),
		'0', $node->name . ': and the detached table holds none of them');
}

# a sub-partition detached in c, which a does not have as a partition any
# more (its administrator detached it there alone, once it was empty): a
# waits with the error until its layout takes the statement
$rc->safe_psql('postgres', "DELETE FROM app.orders WHERE region = 'eu' AND id >= 100");
wait_for_same_table(\@nodes, 'app.orders');
$ra->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE app.orders_eu DETACH PARTITION app.orders_eu_high;
});
$rc->safe_psql('postgres', q{
	SET ROLE mallory;
	ALTER TABLE app.orders_eu DETACH PARTITION app.orders_eu_high;
	CREATE TABLE app.orders_eu_mid PARTITION OF app.orders_eu FOR VALUES FROM (100) TO (1000);
	INSERT INTO app.orders VALUES ('eu', 500, 1);
});
ok(wait_for_error($ra, 'c', 'relation "orders_eu_high" is not a partition of relation "orders_eu"'),
	'a replayed detach of a partition this region does not have stops with the error in replication_status');
is($ra->safe_psql('postgres', q{
		SELECT count(*) FROM app.orders WHERE region = 'eu' AND id = 500}),
	'0', 'and nothing after it is applied');
$ra->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	ALTER TABLE app.orders_eu ATTACH PARTITION app.orders_eu_high FOR VALUES FROM (100) TO (MAXVALUE);
});
wait_for_same_table(\@nodes, 'app.orders');
ok_all_streaming(\@nodes, 'replication resumes once the layout takes the statement');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', q{
			SELECT tableoid::regclass FROM app.orders WHERE region = 'eu' AND id = 500}),
		'app.orders_eu_mid', $node->name . ': the sub-partition made after the detach holds its row');
}

# 4. TRUNCATE and DROP TABLE of a partition alone are refused
($ret, $out, $err) = $rb->psql('postgres', 'SET ROLE mallory; TRUNCATE app.orders_us');
like($err, qr/ERROR:  partition "orders_us" of multi-region table "orders" cannot be truncated alone
DETAIL:  Its rows would be removed in this region only: only a truncate of the partitioned table is replicated.
HINT:  Truncate the partitioned table, or delete the partition's rows with DELETE, which every region applies./,
	'a truncate of a partition alone is refused with its message');
($ret, $out, $err) = $rb->psql('postgres', 'SET ROLE mallory; TRUNCATE app.orders_eu');
like($err, qr/ERROR:  partition "orders_eu" of multi-region table "orders" cannot be truncated alone/,
	'so is a truncate of a sub-partitioned partition');
($ret, $out, $err) = $rb->psql('postgres', 'SET ROLE mallory; DROP TABLE app.orders_eu_low');
like($err, qr/ERROR:  partition "orders_eu_low" of multi-region table "orders" cannot be dropped
DETAIL:  Its rows would be removed in this region only.
HINT:  Detach the partition first \(ALTER TABLE ... DETACH PARTITION, which every region applies\), then drop it./,
	'a drop of a partition is refused with its message');
is($rb->safe_psql('postgres', q{SELECT count(*) FROM app.orders WHERE region IN ('us', 'eu')}),
	$ra->safe_psql('postgres', q{SELECT count(*) FROM app.orders WHERE region IN ('us', 'eu')}),
	'and the partitions keep their rows');

# 5. cosmosrep.ddl_replication applies to partition statements as to the
# others: refuse, and cosmosrep.replicate_ddl
($ret, $out, $err) = $ra->psql('postgres', q{
	SET cosmosrep.ddl_replication = refuse;
	SET ROLE mallory;
	CREATE TABLE app.orders_oc PARTITION OF app.orders FOR VALUES IN ('oc')});
like($err, qr/ERROR:  CREATE TABLE PARTITION of multi-region table "orders" must go through cosmosrep.replicate_ddl/,
	'a new partition is refused under ddl_replication = refuse');
$ra->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = refuse;
	SET ROLE mallory;
	SELECT cosmosrep.replicate_ddl('CREATE TABLE app.orders_oc PARTITION OF app.orders FOR VALUES IN (''oc'')');
	INSERT INTO app.orders VALUES ('oc', 1, 1);
});

# the end: the same partitions and rows everywhere, and every region's
# writes still travel
$_->safe_psql('postgres', "INSERT INTO app.orders VALUES ('us', 100 + " . ord($_->name) . ', 1)')
  for @nodes;
wait_for_same_table(\@nodes, 'app.orders');
ok_all_streaming(\@nodes, 'every link streams at the end');
for my $node ($rb, $rc)
{
	is(layout($node), layout($ra), $node->name . ': has exactly the partitions a has');
	is(rows_in($node), rows_in($ra),
		$node->name . ': holds exactly the rows a holds, in the same partitions');
}

$_->stop for @nodes;
done_testing();
