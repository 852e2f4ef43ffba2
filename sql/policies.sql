--
-- Conflict policies: what enable_table and alter_table_policy accept as
-- policy, path and resolver, and every way they reject one.
--
CREATE EXTENSION cosmosrep;
SELECT cosmosrep.create_region('eastus2', 'host=10.0.0.1 dbname=shop');

-- the columns of a table, in order, as one line
CREATE FUNCTION pg_temp.columns_of(rel regclass) RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', '
                      ORDER BY attnum)
      FROM pg_attribute
     WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped
$$;

CREATE TABLE accounts (
    id         int PRIMARY KEY,
    balance    numeric,
    updated_at timestamptz,
    owner_name text,
    doc        json,
    props      jsonb,
    location   point
);
INSERT INTO accounts VALUES (1, 10, '2024-01-01 00:00+00', 'ann', '{}', '{}', '(0,0)');

CREATE TABLE ledger (id int PRIMARY KEY, amount numeric);

-- a resolver for ledger, the wrong table for accounts
CREATE FUNCTION resolve_ledger(incoming ledger, existing ledger,
                               is_tombstone boolean, conflicting ledger[])
RETURNS ledger LANGUAGE plpgsql AS $$
BEGIN
    RETURN incoming;
END
$$;

-- functions that look like resolvers but are not
CREATE FUNCTION two_arguments(incoming accounts, existing accounts)
RETURNS accounts LANGUAGE sql AS 'SELECT incoming';
CREATE FUNCTION returns_boolean(incoming accounts, existing accounts,
                                is_tombstone boolean, conflicting accounts[])
RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION arguments_reordered(is_tombstone boolean, conflicting accounts[],
                                    incoming accounts, existing accounts)
RETURNS accounts LANGUAGE sql AS 'SELECT incoming';

--
-- Policy
--

-- Bad input: an unknown policy
SELECT cosmosrep.enable_table('accounts', policy => 'first_writer_wins');

-- Bad input: policy names are lowercase
SELECT cosmosrep.enable_table('accounts', policy => 'Last_Writer_Wins');

-- Bad input: an empty policy
SELECT cosmosrep.enable_table('accounts', policy => '');

-- Bad input: a null policy
SELECT cosmosrep.enable_table('accounts', policy => NULL);

--
-- Path
--

-- Bad input: a path with policy manual
SELECT cosmosrep.enable_table('accounts', policy => 'manual', path => 'updated_at');

-- Bad input: a path with policy custom
SELECT cosmosrep.enable_table('accounts', policy => 'custom', path => 'updated_at',
                              resolver => 'resolve_ledger');

-- Bad input: a path naming a column the table does not have
SELECT cosmosrep.enable_table('accounts', path => 'modified_at');

-- Bad input: path names are case sensitive
SELECT cosmosrep.enable_table('accounts', path => 'Balance');

-- Bad input: a path column of type json, which has no ordering
SELECT cosmosrep.enable_table('accounts', path => 'doc');

-- Bad input: a path column of type point, which has no ordering
SELECT cosmosrep.enable_table('accounts', path => 'location');

--
-- Resolver
--

-- Bad input: policy custom without a resolver
SELECT cosmosrep.enable_table('accounts', policy => 'custom');

-- Bad input: a resolver with the default policy
SELECT cosmosrep.enable_table('accounts', resolver => 'resolve_ledger');

-- Bad input: a resolver with policy manual
SELECT cosmosrep.enable_table('accounts', policy => 'manual', resolver => 'resolve_ledger');

-- Bad input: a resolver function that does not exist
SELECT cosmosrep.enable_table('accounts', policy => 'custom', resolver => 'resolve_accounts');

-- Bad input: a resolver in a schema that does not exist
SELECT cosmosrep.enable_table('accounts', policy => 'custom', resolver => 'nowhere.resolve_accounts');

-- Bad input: a resolver with two arguments instead of four
SELECT cosmosrep.enable_table('accounts', policy => 'custom', resolver => 'two_arguments');

-- Bad input: a resolver with the right arguments that returns boolean
SELECT cosmosrep.enable_table('accounts', policy => 'custom', resolver => 'returns_boolean');

-- Bad input: a resolver taking its arguments in another order
SELECT cosmosrep.enable_table('accounts', policy => 'custom', resolver => 'arguments_reordered');

-- Bad input: a resolver written for the rows of another table
SELECT cosmosrep.enable_table('accounts', policy => 'custom', resolver => 'resolve_ledger');

-- Bad input: a STRICT resolver (it would never see a deleted row)
CREATE FUNCTION strict_resolver(incoming accounts, existing accounts,
                                is_tombstone boolean, conflicting accounts[])
RETURNS accounts LANGUAGE sql STRICT AS 'SELECT incoming';
SELECT cosmosrep.enable_table('accounts', policy => 'custom', resolver => 'strict_resolver');
DROP FUNCTION strict_resolver;

-- none of the rejected calls changed anything
SELECT count(*) AS tables FROM cosmosrep.tables;
SELECT pg_temp.columns_of('accounts');

--
-- Accepted policies
--

-- last_writer_wins on ordered columns: numbers, timestamps, text, jsonb
SELECT cosmosrep.enable_table('accounts', path => 'updated_at');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;
SELECT cosmosrep.alter_table_policy('accounts', 'last_writer_wins', path => 'balance');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;
SELECT cosmosrep.alter_table_policy('accounts', 'last_writer_wins', path => 'owner_name');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;
SELECT cosmosrep.alter_table_policy('accounts', 'last_writer_wins', path => 'props');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

-- manual
SELECT cosmosrep.alter_table_policy('accounts', 'manual');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

-- custom, with a PL/pgSQL resolver
CREATE FUNCTION resolve_accounts(incoming accounts, existing accounts,
                                 is_tombstone boolean, conflicting accounts[])
RETURNS accounts LANGUAGE plpgsql AS $$
BEGIN
    IF is_tombstone THEN
        RETURN existing;
    END IF;
    incoming.balance := greatest(incoming.balance, existing.balance);
    RETURN incoming;
END
$$;
SELECT cosmosrep.alter_table_policy('accounts', 'custom', resolver => 'resolve_accounts');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

-- the resolver is found among overloads of its name by its signature
CREATE FUNCTION resolve_accounts(incoming accounts, existing accounts)
RETURNS accounts LANGUAGE sql AS 'SELECT incoming';
SELECT cosmosrep.alter_table_policy('accounts', 'custom', resolver => 'resolve_accounts');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

-- a schema-qualified resolver, with a name that needs quoting
CREATE SCHEMA resolvers;
CREATE FUNCTION resolvers."Resolve Accounts"(incoming accounts, existing accounts,
                                             is_tombstone boolean, conflicting accounts[])
RETURNS accounts LANGUAGE sql AS 'SELECT existing';
SELECT cosmosrep.alter_table_policy('accounts', 'custom',
                                    resolver => 'resolvers."Resolve Accounts"');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables;

-- custom at enable time
SELECT cosmosrep.enable_table('ledger', policy => 'custom', resolver => 'resolve_ledger');
SELECT table_name, policy, path, resolver FROM cosmosrep.tables ORDER BY table_name::text;

--
-- alter_table_policy validates the same way and changes nothing when it
-- rejects a call
--

-- Bad input: alter to an unknown policy
SELECT cosmosrep.alter_table_policy('accounts', 'newest_wins');

-- Bad input: alter to a null policy
SELECT cosmosrep.alter_table_policy('accounts', NULL);

-- Bad input: alter with a path naming a missing column
SELECT cosmosrep.alter_table_policy('accounts', 'last_writer_wins', path => 'modified_at');

-- Bad input: alter with a path of type json
SELECT cosmosrep.alter_table_policy('accounts', 'last_writer_wins', path => 'doc');

-- Bad input: alter with a path and policy manual
SELECT cosmosrep.alter_table_policy('accounts', 'manual', path => 'balance');

-- Bad input: alter to custom without a resolver
SELECT cosmosrep.alter_table_policy('accounts', 'custom');

-- Bad input: alter with a resolver and policy last_writer_wins
SELECT cosmosrep.alter_table_policy('accounts', 'last_writer_wins', resolver => 'resolve_accounts');

-- Bad input: alter with a missing resolver function
SELECT cosmosrep.alter_table_policy('accounts', 'custom', resolver => 'resolve_nothing');

-- Bad input: alter with a resolver of the wrong signature
SELECT cosmosrep.alter_table_policy('accounts', 'custom', resolver => 'two_arguments');

-- Bad input: alter with the resolver of another table
SELECT cosmosrep.alter_table_policy('accounts', 'custom', resolver => 'resolve_ledger');

-- the policies are unchanged
SELECT table_name, policy, path, resolver FROM cosmosrep.tables ORDER BY table_name::text;

-- Bad input: a column of cosmosrep as path
SELECT cosmosrep.alter_table_policy('accounts', 'last_writer_wins', path => '_cr_base');

-- Bad input: dropping a resolver that a table uses
DROP FUNCTION resolve_ledger(ledger, ledger, boolean, ledger[]);

-- Bad input: renaming a resolver that a table uses, or moving it
ALTER FUNCTION resolve_ledger(ledger, ledger, boolean, ledger[]) RENAME TO resolve_ledger2;
CREATE SCHEMA elsewhere;
ALTER FUNCTION resolve_ledger(ledger, ledger, boolean, ledger[]) SET SCHEMA elsewhere;
DROP SCHEMA elsewhere;

-- the policies are unchanged, and the resolver still exists
SELECT table_name, policy, path, resolver FROM cosmosrep.tables ORDER BY table_name::text;
SELECT count(*) FROM pg_proc WHERE proname = 'resolve_ledger';
-- another function may be renamed
ALTER FUNCTION two_arguments(accounts, accounts) RENAME TO two_args;
ALTER FUNCTION two_args(accounts, accounts) RENAME TO two_arguments;

-- a resolver no table uses any more can be dropped
SELECT cosmosrep.alter_table_policy('ledger', 'manual');
DROP FUNCTION resolve_ledger(ledger, ledger, boolean, ledger[]);

-- dropping a multi-region table forgets its configuration
DROP TABLE ledger;
SELECT table_name, policy FROM cosmosrep.tables ORDER BY table_name::text;
SELECT count(*) FROM cosmosrep.replicated_table;

SELECT cosmosrep.disable_table('accounts');
DROP FUNCTION two_arguments(accounts, accounts),
    returns_boolean(accounts, accounts, boolean, accounts[]),
    arguments_reordered(boolean, accounts[], accounts, accounts),
    resolve_accounts(accounts, accounts, boolean, accounts[]),
    resolve_accounts(accounts, accounts),
    resolvers."Resolve Accounts"(accounts, accounts, boolean, accounts[]);
DROP SCHEMA resolvers;
DROP TABLE accounts;
DROP EXTENSION cosmosrep CASCADE;
