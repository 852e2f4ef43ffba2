-- DDL on a multi-region table must keep what its configuration needs
CREATE EXTENSION cosmosrep;
SELECT cosmosrep.create_region('eastus', 'host=localhost dbname=regression');
CREATE TABLE orders (id int PRIMARY KEY, item text, placed_at timestamptz);
INSERT INTO orders VALUES (1, 'book', '2026-01-01');
SELECT cosmosrep.enable_table('orders', path => 'placed_at');

-- Bad input: renaming the path column
ALTER TABLE orders RENAME COLUMN placed_at TO placed;

-- Bad input: giving the path column an unordered type
ALTER TABLE orders ALTER COLUMN placed_at TYPE json USING to_json(placed_at);

-- Bad input: dropping the path column
ALTER TABLE orders DROP COLUMN placed_at;

-- Bad input: dropping the primary key
ALTER TABLE orders DROP CONSTRAINT orders_pkey;

-- Bad input: dropping a column of cosmosrep
ALTER TABLE orders DROP COLUMN _cr_base;

-- the table and its configuration are unchanged
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;
SELECT conname FROM pg_constraint WHERE conrelid = 'orders'::regclass;
SELECT table_name, policy, path FROM cosmosrep.tables;

-- other DDL is fine
ALTER TABLE orders ADD COLUMN note text;
ALTER TABLE orders RENAME COLUMN item TO product;

-- after changing the policy the old path column may go
SELECT cosmosrep.alter_table_policy('orders', 'last_writer_wins');
ALTER TABLE orders DROP COLUMN placed_at;

-- dropping the table forgets it
DROP TABLE orders;
SELECT count(*) FROM cosmosrep.tables;

DROP EXTENSION cosmosrep;
-- the schema goes with the extension
SELECT count(*) FROM pg_namespace WHERE nspname = 'cosmosrep';
