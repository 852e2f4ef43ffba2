-- demo/schema.sql: the demo's tables, created the same way in every region
-- (join_region wants the group's tables present and empty in the joining
-- region).  psql variable :order_id_start is different in each region:
-- order ids come from a region-local sequence with a disjoint range per
-- region, the usual way to keep concurrent inserts from colliding on keys.
-- Customers are shared: every region updates the same customer rows.

CREATE SEQUENCE orders_id_seq START :order_id_start;

CREATE TABLE customers (
    id                bigint PRIMARY KEY,
    name              text NOT NULL,
    tier              text NOT NULL DEFAULT 'standard',
    last_order_region text,
    last_order_qty    int
);

CREATE TABLE orders (
    id          bigint PRIMARY KEY DEFAULT nextval('orders_id_seq'),
    customer_id bigint NOT NULL,
    item        text NOT NULL,
    qty         int NOT NULL,
    placed_in   text NOT NULL DEFAULT current_setting('cluster_name')
);
