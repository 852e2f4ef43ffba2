-- Consistency levels: a session may relax the server-wide level, never
-- strengthen it; session tokens name what a reader must see
CREATE EXTENSION cosmosrep;
SELECT cosmosrep.create_region('eastus', 'host=localhost dbname=regression');
SHOW cosmosrep.default_consistency;

-- relaxing is allowed
SET cosmosrep.consistency = 'consistent_prefix';
SET cosmosrep.consistency = 'eventual';
SET cosmosrep.consistency = 'session';
RESET cosmosrep.consistency;

-- Bad input: a stronger level than the server-wide one
SET cosmosrep.consistency = 'strong';
SET cosmosrep.consistency = 'bounded_staleness';

-- Bad input: an unknown level
SET cosmosrep.consistency = 'linearizable';

-- a write reports a token naming this region's commit
CREATE TABLE notes (id int PRIMARY KEY, body text);
SELECT cosmosrep.enable_table('notes');
INSERT INTO notes VALUES (1, 'hello');
SELECT cosmosrep.session_token() ~ '^1:[0-9A-F]+/[0-9A-F]+$' AS token_names_this_region,
       current_setting('cosmosrep.session_token') = cosmosrep.session_token() AS reported;
-- this region has applied its own writes: reading with the token is immediate
SELECT body FROM notes;

-- commits inside a procedure: the token shows each (current_setting and
-- session_token() inside it), and the client gets the last one's
CREATE TEMP TABLE tokens_seen (step int, token text);
CREATE PROCEDURE two_writes() LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notes VALUES (2, 'in a procedure');
    COMMIT;
    INSERT INTO tokens_seen VALUES (1, current_setting('cosmosrep.session_token'));
    INSERT INTO notes VALUES (3, 'again');
    COMMIT;
    INSERT INTO tokens_seen VALUES (2, cosmosrep.session_token());
END $$;
INSERT INTO tokens_seen VALUES (0, current_setting('cosmosrep.session_token'));
CALL two_writes();
INSERT INTO tokens_seen VALUES (3, current_setting('cosmosrep.session_token'));
SELECT step, split_part(token, ':', 1) AS region,
       split_part(token, ':', 2)::pg_lsn > lag(split_part(token, ':', 2)::pg_lsn)
           OVER (ORDER BY step) AS advanced,
       token = lag(token) OVER (ORDER BY step) AS same_as_before
FROM tokens_seen ORDER BY step;
DROP PROCEDURE two_writes();

-- Bad input: a malformed token
SET cosmosrep.session_token = 'yesterday';
SET cosmosrep.session_token = '1:0/10,';
SET cosmosrep.session_token = '0:0/10';

-- Bad input: a token of a region outside the group
SET cosmosrep.session_token = '7:0/10';
SELECT count(*) FROM notes;
RESET cosmosrep.session_token;

-- Bad input: a token from this region's future
SET cosmosrep.session_token = '1:FFFF/0';
\set VERBOSITY terse
SELECT count(*) FROM notes;
\set VERBOSITY default
RESET cosmosrep.session_token;
SELECT count(*) FROM notes;

-- Write regions: multi-region writes on by default
SELECT region_name, accepts_writes FROM cosmosrep.regions;
-- (the version of the setting, which every change raises)
CREATE TEMP TABLE writes_before AS SELECT max(writes_version) AS v FROM cosmosrep.region;

-- Bad input: a write region named while switching multi-region writes on
SELECT cosmosrep.set_multiple_write_regions(true, 'eastus');
-- Bad input: an unknown write region
SELECT cosmosrep.set_multiple_write_regions(false, 'mars');
-- Bad input: NULL
SELECT cosmosrep.set_multiple_write_regions(NULL);
SELECT region_name, accepts_writes FROM cosmosrep.regions;
SELECT max(writes_version) = (SELECT v FROM writes_before) AS unchanged FROM cosmosrep.region;

-- off, with this region as the write region: writes go on here
SELECT cosmosrep.set_multiple_write_regions(false);
SELECT region_name, accepts_writes FROM cosmosrep.regions;
SELECT max(writes_version) > (SELECT v FROM writes_before) AS changed FROM cosmosrep.region;
INSERT INTO notes VALUES (2, 'still writable');

-- strong needs a single write region, and refuses to switch writes on
ALTER SYSTEM SET cosmosrep.default_consistency = 'strong';
SELECT pg_reload_conf();
\c
SHOW cosmosrep.default_consistency;
SELECT count(*) FROM notes;
SELECT cosmosrep.set_multiple_write_regions(true);
-- with no other region, a strong commit waits for nothing
INSERT INTO notes VALUES (3, 'strong');
SELECT count(*) FROM notes;
ALTER SYSTEM RESET cosmosrep.default_consistency;
SELECT pg_reload_conf();
\c
SHOW cosmosrep.default_consistency;
SELECT cosmosrep.set_multiple_write_regions(true);
SELECT region_name, accepts_writes FROM cosmosrep.regions;

-- the operator's view of it all
SELECT cosmosrep.set_failover_priority('eastus', 1);
SELECT item, name, value FROM cosmosrep.verify ORDER BY sort, name;

DROP TABLE notes;
DROP EXTENSION cosmosrep;
