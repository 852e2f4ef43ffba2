# Partitioned tables, in three regions whose partitions differ: a
# list-partitioned table (one partition sub-partitioned by range in a,
# flat in b, other names and a default partition in c) is made
# multi-region as one table.  Every change travels as a change of the
# partitioned table and lands in the receiving region's own partition;
# colliding writes, an update that moves a row to another partition, a
# delete racing an update and a truncate end alike everywhere, and
# conflicts, tombstones and the join's copy name the partitioned table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CosmosRep::Test;

my ($ra, $rb) = make_group('a', 'b');

# heal the regions and wait until every link streams again, so that the
# next pause finds every worker started
sub heal_and_wait
{
	my ($nodes) = @_;
	my $peers = @$nodes - 1;

	heal_regions($nodes);
	for my $node (@$nodes)
	{
		$node->poll_query_until('postgres',
			"SELECT count(*) = $peers AND bool_and(state = 'streaming')"
			  . ' FROM cosmosrep.replication_status')
		  or die $node->name . ' did not resume';
	}
	return;
}

my $columns = q{(region text, id int, qty int, note text, PRIMARY KEY (region, id))
                PARTITION BY LIST (region)};
$ra->safe_psql('postgres', qq{
	CREATE TABLE orders $columns;
	CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu') PARTITION BY RANGE (id);
	CREATE TABLE orders_eu_low PARTITION OF orders_eu FOR VALUES FROM (MINVALUE) TO (100);
	CREATE TABLE orders_eu_high PARTITION OF orders_eu FOR VALUES FROM (100) TO (MAXVALUE);
	CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us');
	CREATE TABLE orders_asia PARTITION OF orders FOR VALUES IN ('asia');
});
$rb->safe_psql('postgres', qq{
	CREATE TABLE orders $columns;
	CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu');
	CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us');
	CREATE TABLE orders_asia PARTITION OF orders FOR VALUES IN ('asia');
});

# the rows a holds when it enables the table travel from its partitions
$ra->safe_psql('postgres', q{
	INSERT INTO orders VALUES ('eu', 1, 1, 'eu low'), ('eu', 150, 1, 'eu high'),
	                          ('us', 5, 1, 'us');
	SELECT cosmosrep.enable_table('orders');
});
wait_for_same_table([ $ra, $rb ], 'orders');
is($rb->safe_psql('postgres', q{
		SELECT string_agg(tableoid::regclass || ':' || id, ',' ORDER BY id) FROM orders}),
	'orders_eu:1,orders_us:5,orders_eu:150',
	'the rows of an enabled partitioned table land in the partitions of the other region');
is($rb->safe_psql('postgres', q{
		SELECT string_agg(c.relname || ':' || t.tgname, ',' ORDER BY c.relname, t.tgname)
		  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
		 WHERE t.tgname LIKE 'cosmosrep%' AND NOT t.tgisinternal}),
	'orders:cosmosrep_insert_check,orders:cosmosrep_stamp,orders:cosmosrep_truncate,'
	  . 'orders_asia:cosmosrep_insert_check,orders_asia:cosmosrep_stamp,'
	  . 'orders_eu:cosmosrep_insert_check,orders_eu:cosmosrep_stamp,'
	  . 'orders_us:cosmosrep_insert_check,orders_us:cosmosrep_stamp',
	'the enable that arrives puts the row triggers on every partition and the truncate trigger on the table');

# a partition is never multi-region alone
my ($ret, $out, $err) = $ra->psql('postgres', "SELECT cosmosrep.enable_table('orders_us')");
like($err, qr/table "orders_us" is a partition of "orders"/,
	'enabling a partition of a multi-region table is refused');

# the row trigger cloned to a partition stays enabled for local writes
($ret, $out, $err) = $ra->psql('postgres', 'ALTER TABLE orders_us DISABLE TRIGGER cosmosrep_stamp');
like($err, qr/trigger "cosmosrep_stamp" of multi-region table "orders_us" must stay enabled for local writes only/,
	'disabling the row trigger of a partition is refused');

# c joins with partitions of its own: other names, other bounds
my $rc = new_region('c');
$rc->safe_psql('postgres', qq{
	CREATE TABLE orders $columns;
	CREATE TABLE c_europe PARTITION OF orders FOR VALUES IN ('eu');
	CREATE TABLE c_rest PARTITION OF orders DEFAULT;
});
$rc->safe_psql('postgres', sprintf(
	"SELECT cosmosrep.join_region('c', '%s', via => '%s')",
	region_dsn($rc), region_dsn($ra)));
my @nodes = ($ra, $rb, $rc);
wait_for_same_table(\@nodes, 'orders');
is($rc->safe_psql('postgres', q{
		SELECT string_agg(tableoid::regclass || ':' || id, ',' ORDER BY id) FROM orders}),
	'c_europe:1,c_rest:5,c_europe:150',
	'the join copies the partitioned table into the partitions of the joining region');
is($rc->safe_psql('postgres', q{
		SELECT string_agg(table_name || ' ' || policy, ',') FROM cosmosrep.tables}),
	'orders last_writer_wins', 'cosmosrep.tables lists the partitioned table alone in the joined region');
is($rc->safe_psql('postgres', q{
		SELECT string_agg(name || ' ' || value, ',') FROM cosmosrep.verify
		 WHERE item = 'table_policy'}),
	'orders last_writer_wins', 'cosmosrep.verify shows the partitioned table\'s policy');

# inserts in every region, landing in different partitions
$ra->safe_psql('postgres', "INSERT INTO orders VALUES ('asia', 2, 1, 'from a')");
$rb->safe_psql('postgres', "INSERT INTO orders VALUES ('eu', 200, 1, 'from b')");
$rc->safe_psql('postgres', "INSERT INTO orders VALUES ('us', 3, 1, 'from c')");
wait_for_same_table(\@nodes, 'orders');
is($ra->safe_psql('postgres', q{
		SELECT string_agg(tableoid::regclass || ':' || region || '/' || id, ','
		                  ORDER BY region, id) FROM orders}),
	'orders_asia:asia/2,orders_eu_low:eu/1,orders_eu_high:eu/150,orders_eu_high:eu/200,'
	  . 'orders_us:us/3,orders_us:us/5',
	'a routes every row into its sub-partitions');

# concurrent updates of one key in two regions: the later one wins
partition_regions(\@nodes);
$ra->safe_psql('postgres', "UPDATE orders SET qty = 10, note = 'a' WHERE region = 'eu' AND id = 1");
$rb->safe_psql('postgres', "UPDATE orders SET qty = 20, note = 'b' WHERE region = 'eu' AND id = 1");
heal_and_wait(\@nodes);
wait_for_same_table(\@nodes, 'orders');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', "SELECT qty || note FROM orders WHERE region = 'eu' AND id = 1"),
		'20b', $node->name . ': the later of two concurrent updates wins');
}
is($ra->safe_psql('postgres', q{
		SELECT table_name || ' ' || kind || ' ' || resolution || ' ' || (key->>'id')
		  FROM cosmosrep.conflicts WHERE key->>'region' = 'eu' AND key->>'id' = '1'}),
	'orders update_update remote_applied 1',
	'the conflict is recorded under the partitioned table, with its key');
is($rc->safe_psql('postgres', q{
		SELECT count(*) FROM cosmosrep.conflicts
		 WHERE table_name = 'orders'::regclass AND key->>'id' = '1'}),
	'1', 'c, whose partition has another name, records the conflict under the partitioned table too');

# an update that moves a row to another partition, racing an earlier
# update of the row elsewhere: the move is newer and wins everywhere
partition_regions(\@nodes);
$rb->safe_psql('postgres', "UPDATE orders SET qty = 99 WHERE region = 'eu' AND id = 150");
$ra->safe_psql('postgres', "UPDATE orders SET region = 'us', note = 'moved' WHERE region = 'eu' AND id = 150");
is($ra->safe_psql('postgres', "SELECT tableoid::regclass FROM orders WHERE id = 150"),
	'orders_us', 'the update moves the row to another partition in a');
is($ra->safe_psql('postgres', q{
		SELECT count(*) FROM orders WHERE id = 150 AND _cr_base > 0}),
	'1', 'the moved row keeps the update\'s base, as an update that changes the key');
heal_and_wait(\@nodes);
wait_for_same_table(\@nodes, 'orders');
for my $node (@nodes)
{
	is($node->safe_psql('postgres',
			"SELECT string_agg(region || '/' || qty || '/' || note, ',') FROM orders WHERE id = 150"),
		'us/1/moved', $node->name . ': the newer move wins over the older update of the row');
	is($node->safe_psql('postgres', q{
			SELECT table_name || ' ' || key FROM cosmosrep.tombstones WHERE key LIKE '%150%'}),
		'orders (eu,150)', $node->name . ': the old key\'s tombstone names the partitioned table');
}
is($rb->safe_psql('postgres', q{
		SELECT table_name || ' ' || kind FROM cosmosrep.conflicts WHERE key->>'id' = '150'}),
	'orders delete_updated', 'b records its update losing to the move');

# the same race the other way round: the update of the old key is newer,
# so the old key lives again beside the moved row, as with any update
# that changes a primary key
partition_regions(\@nodes);
$ra->safe_psql('postgres', "UPDATE orders SET region = 'eu' WHERE region = 'us' AND id = 5");
$rb->safe_psql('postgres', "UPDATE orders SET qty = 77 WHERE region = 'us' AND id = 5");
heal_and_wait(\@nodes);
wait_for_same_table(\@nodes, 'orders');
for my $node (@nodes)
{
	is($node->safe_psql('postgres',
			"SELECT string_agg(region || '/' || qty, ',' ORDER BY region) FROM orders WHERE id = 5"),
		'eu/1,us/77', $node->name . ': a newer update of the moved row\'s old key recreates it');
}

# a delete racing an update: the newer delete wins
partition_regions(\@nodes);
$rb->safe_psql('postgres', "UPDATE orders SET qty = 5 WHERE region = 'asia' AND id = 2");
$rc->safe_psql('postgres', "DELETE FROM orders WHERE region = 'asia' AND id = 2");
heal_and_wait(\@nodes);
wait_for_same_table(\@nodes, 'orders');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', "SELECT count(*) FROM orders WHERE id = 2"),
		'0', $node->name . ': the newer delete wins over the update');
}

# an update that leaves a large (TOASTed) value unchanged, winning over a
# concurrent update where the local row is not the one it replaced: the
# row is read from the peer's partitioned table
$ra->safe_psql('postgres', q{
	INSERT INTO orders SELECT 'eu', 7, 1, string_agg(md5(i::text), '')
	  FROM generate_series(1, 3000) i});
wait_for_same_table(\@nodes, 'orders');
partition_regions(\@nodes);
$rb->safe_psql('postgres', "UPDATE orders SET qty = 70 WHERE region = 'eu' AND id = 7");
$ra->safe_psql('postgres', "UPDATE orders SET qty = 71 WHERE region = 'eu' AND id = 7");
heal_and_wait(\@nodes);
wait_for_same_table(\@nodes, 'orders');
for my $node (@nodes)
{
	is($node->safe_psql('postgres',
			"SELECT qty || ':' || length(note) FROM orders WHERE region = 'eu' AND id = 7"),
		'71:96000', $node->name . ': the newer update keeps the large value it did not change');
}

# a partition made later in every region gets the row trigger and the
# columns: made with CREATE TABLE ... PARTITION OF in a, attached in b
# (a copy of the table's columns), taken by the default partition in c.
# Partition statements travel to every region (test 051); here each
# region's administrator keeps its own layout with
# cosmosrep.ddl_replication = warn.  A row that arrives before its region
# has a partition for it is an error of the change, which goes to the
# feed; reapplied, it travels on.
$ra->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	CREATE TABLE orders_sa PARTITION OF orders FOR VALUES IN ('sa');
	INSERT INTO orders VALUES ('sa', 1, 1, 'before b has a partition')});
ok($rb->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM cosmosrep.conflict_feed
		 WHERE table_name = 'orders'::regclass AND kind = 'apply_error'
		   AND error LIKE '%no partition of relation "orders" found for row%'}),
	'a row no partition of the region accepts waits in the feed as an apply error')
  or diag($rb->safe_psql('postgres', 'SELECT * FROM cosmosrep.replication_status'));
$rb->safe_psql('postgres', q{
	SET cosmosrep.ddl_replication = warn;
	CREATE TABLE orders_sa (LIKE orders);
	ALTER TABLE orders ATTACH PARTITION orders_sa FOR VALUES IN ('sa');
	SELECT cosmosrep.reapply_conflict(conflict_id) FROM cosmosrep.conflict_feed
	 WHERE table_name = 'orders'::regclass});
$rb->safe_psql('postgres', "INSERT INTO orders VALUES ('sa', 2, 1, 'from b')");
wait_for_same_table(\@nodes, 'orders');
is($rb->safe_psql('postgres', q{
		SELECT string_agg(tableoid::regclass || ':' || id || ':' || _cr_region, ',' ORDER BY id)
		  FROM orders WHERE region = 'sa'}),
	'orders_sa:1:2,orders_sa:2:2',
	'rows written in a partition attached later are stamped: the row trigger was cloned to it');
is($rc->safe_psql('postgres', q{
		SELECT string_agg(tableoid::regclass || ':' || id, ',' ORDER BY id)
		  FROM orders WHERE region = 'sa'}),
	'c_rest:1,c_rest:2', 'c keeps them in its default partition');

# truncate of the partitioned table, racing a newer insert elsewhere
partition_regions(\@nodes);
$rb->safe_psql('postgres', "INSERT INTO orders VALUES ('eu', 300, 1, 'before the truncate')");
$ra->safe_psql('postgres', 'TRUNCATE orders');
$rc->safe_psql('postgres', "INSERT INTO orders VALUES ('us', 500, 1, 'after the truncate')");
heal_and_wait(\@nodes);
wait_for_same_table(\@nodes, 'orders');
ok_all_streaming(\@nodes, 'every link streams after the races');

# a resolver of a partitioned table gets the rows as rows of the table,
# whichever partition holds them
for my $node (@nodes)
{
	$node->safe_psql('postgres', q{
		CREATE TABLE stock (site text, sku int, qty int, PRIMARY KEY (site, sku))
		    PARTITION BY LIST (site);
		CREATE FUNCTION keep_most(incoming stock, existing stock, is_tombstone boolean,
		                          conflicting stock[]) RETURNS stock
		LANGUAGE plpgsql AS $$
		BEGIN
		    IF incoming IS NULL OR existing IS NULL THEN
		        RETURN coalesce(incoming, existing);
		    END IF;
		    RETURN CASE WHEN existing.qty > incoming.qty THEN existing ELSE incoming END;
		END
		$$;
	});
}
$ra->safe_psql('postgres', q{CREATE TABLE stock_x PARTITION OF stock FOR VALUES IN ('x');
	CREATE TABLE stock_y PARTITION OF stock FOR VALUES IN ('y')});
$rb->safe_psql('postgres', q{CREATE TABLE stock_all PARTITION OF stock FOR VALUES IN ('x', 'y')});
$rc->safe_psql('postgres', q{CREATE TABLE stock_rest PARTITION OF stock DEFAULT});
$ra->safe_psql('postgres', q{
	SELECT cosmosrep.enable_table('stock', 'custom', resolver => 'public.keep_most');
	INSERT INTO stock VALUES ('x', 1, 1), ('y', 1, 1)});
wait_for_same_table(\@nodes, 'stock');
partition_regions(\@nodes);
$ra->safe_psql('postgres', "UPDATE stock SET qty = 50 WHERE site = 'x' AND sku = 1");
$rb->safe_psql('postgres', "UPDATE stock SET qty = 10 WHERE site = 'x' AND sku = 1");
$rc->safe_psql('postgres', "UPDATE stock SET qty = 30 WHERE site = 'x' AND sku = 1");
heal_and_wait(\@nodes);
wait_for_same_table(\@nodes, 'stock');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', "SELECT qty FROM stock WHERE site = 'x' AND sku = 1"),
		'50', $node->name . ': the resolver of the partitioned table keeps the most');
	is($node->safe_psql('postgres', q{
			SELECT count(*) FROM cosmosrep.conflict_feed WHERE table_name = 'stock'::regclass}),
		'0', $node->name . ': and no call of it failed');
}

# the end: every region holds exactly the same rows
my %contents = map {
	$_->name => $_->safe_psql('postgres', q{
		SELECT string_agg(concat_ws('/', region, id, qty, note, _cr_version, _cr_base,
		                            _cr_region, _cr_config), ',' ORDER BY region, id)
		  FROM orders})
} @nodes;
like($contents{a}, qr{^us/500/1/after the truncate/\d+/0/3/\d+$},
	'only the insert newer than the truncate is left');
is($contents{b}, $contents{a}, 'b holds exactly what a holds');
is($contents{c}, $contents{a}, 'c holds exactly what a holds');

# disabling the table removes the triggers and columns of every partition
$ra->safe_psql('postgres', "SELECT cosmosrep.disable_table('orders')");
for my $node (@nodes)
{
	ok($node->poll_query_until('postgres', q{
			SELECT count(*) = 0 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
			 WHERE t.tgname LIKE 'cosmosrep%'
			   AND (c.relname LIKE '%orders%' OR c.relname LIKE 'c\_%')}),
		$node->name . ': the disable drops the triggers of the table and its partitions');
	is($node->safe_psql('postgres', q{
			SELECT count(*) FROM pg_attribute
			 WHERE attname LIKE '\_cr\_%' AND NOT attisdropped
			   AND attrelid IN (SELECT oid FROM pg_class WHERE relname LIKE '%orders%'
			                    OR relname LIKE 'c\_%')}),
		'0', $node->name . ': and the columns of the table and its partitions');
}

$_->stop for @nodes;
done_testing();
