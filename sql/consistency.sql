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

DROP TABLE notes;
DROP EXTENSION cosmosrep;
