-- demo/schema.sql: the demo's tables, created the same way in every region
-- (join_region wants the group's tables present and empty in the joining
-- region).  Order ids come from cosmosrep.global_id(), unique across the
-- regions without coordination, so concurrent inserts in several regions
-- never collide on keys (a sequence would give every region the same
-- numbers).  Customers are shared: every region updates the same customer
-- rows.
-- Payments are shared too, and their conflicts go to a custom resolver
-- (resolve_payment, below) instead of last writer wins.

CREATE TABLE customers (
    id                bigint PRIMARY KEY,
    name              text NOT NULL,
    tier              text NOT NULL DEFAULT 'standard',
    last_order_region text,
    last_order_qty    int
);

CREATE TABLE orders (
    id          bigint PRIMARY KEY DEFAULT cosmosrep.global_id(),
    customer_id bigint NOT NULL,
    item        text NOT NULL,
    qty         int NOT NULL,
    placed_in   text NOT NULL DEFAULT current_setting('cluster_name')
);

-- The payments ledger: a payment moves pending -> authorized -> captured,
-- and may end refunded.  Two regions that cannot see each other may move
-- the same payment at once (authorize in one, capture in the other); last
-- writer wins could then keep the authorization and forget money already
-- captured.  The table's custom resolver keeps the furthest status
-- instead, so the payment ends in the same, furthest state everywhere.
CREATE TABLE payments (
    id              bigint PRIMARY KEY,
    amount          numeric(12, 2) NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'authorized', 'captured', 'refunded')),
    tags            text[] NOT NULL DEFAULT '{}',
    last_touched_by text NOT NULL DEFAULT current_setting('cluster_name')
);

-- resolve_payment: cosmosrep calls it, in every region, with the two
-- conflicting writes of a payment in the same order: incoming is the newer
-- write, existing the older one, NULL for a write that deleted the payment
-- (is_tombstone: the newer write is a delete); conflicting holds rows that
-- wait in the conflicts feed (unused here).  It returns the row to keep,
-- or NULL to delete the payment.  The merge is a max and a union, so any
-- number of regions end with the same row whatever order the writes reach
-- them in:
--   * the higher status rank wins (0 pending, 1 authorized, 2 captured,
--     3 refunded, which is terminal); on a tie, the higher
--     last_touched_by (a tie is broken by the rows' values, never by which
--     write is newer: a merge carries the newer version with the values it
--     kept, so "newer" would depend on the order of arrival);
--   * tags: the sorted union of both writes' tags;
--   * last_touched_by (like every other column) comes from the kept row;
--   * a delete wins only over a payment not yet captured: captured or
--     refunded money is never forgotten.
-- Not STRICT (cosmosrep refuses a STRICT resolver): a deleted row arrives
-- as NULL.  It names only its arguments and pg_catalog functions, so the
-- apply worker's search_path does not matter.
CREATE FUNCTION resolve_payment(incoming payments, existing payments,
                                is_tombstone boolean, conflicting payments[])
RETURNS payments
LANGUAGE plpgsql AS $$
DECLARE
    ranks constant text[] := ARRAY['pending', 'authorized', 'captured', 'refunded'];
    merged_tags text[];
BEGIN
    -- the newer write deleted the payment
    IF is_tombstone OR incoming.id IS NULL THEN
        IF existing.id IS NOT NULL
           AND array_position(ranks, existing.status) - 1 >= 2 THEN
            RETURN existing;
        END IF;
        RETURN NULL;
    END IF;
    -- the older write deleted it: the newer write brings it back
    IF existing.id IS NULL THEN
        RETURN incoming;
    END IF;
    merged_tags := ARRAY(SELECT DISTINCT tag COLLATE "C"
                           FROM unnest(coalesce(incoming.tags, '{}')
                                       || coalesce(existing.tags, '{}')) AS tag
                          ORDER BY 1);
    IF array_position(ranks, existing.status) > array_position(ranks, incoming.status)
       OR (existing.status = incoming.status
           AND existing.last_touched_by COLLATE "C" > incoming.last_touched_by COLLATE "C") THEN
        existing.tags := merged_tags;
        RETURN existing;
    END IF;
    incoming.tags := merged_tags;
    RETURN incoming;
END
$$;
