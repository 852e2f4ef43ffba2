--
-- Regions: cosmosrep.create_region, the cosmosrep.regions view and the
-- redaction of connection secrets for ordinary users.
--
CREATE EXTENSION cosmosrep;

-- a fresh extension has no region
SELECT count(*) AS regions FROM cosmosrep.regions;

-- Bad input: a region name with an uppercase letter
SELECT cosmosrep.create_region('EastUS', 'host=10.0.0.1 dbname=shop');

-- Bad input: a region name that starts with a digit
SELECT cosmosrep.create_region('2east', 'host=10.0.0.1 dbname=shop');

-- Bad input: a region name with a hyphen
SELECT cosmosrep.create_region('east-us', 'host=10.0.0.1 dbname=shop');

-- Bad input: an empty region name
SELECT cosmosrep.create_region('', 'host=10.0.0.1 dbname=shop');

-- Bad input: a region name longer than the limit
SELECT cosmosrep.create_region(repeat('a', 31), 'host=10.0.0.1 dbname=shop');

-- Bad input: a connection string with a keyword but no value
SELECT cosmosrep.create_region('eastus', 'host');

-- Bad input: a connection string with an unknown keyword
SELECT cosmosrep.create_region('eastus', 'host=10.0.0.1 colour=blue');

-- Bad input: a connection string with an unterminated quote
SELECT cosmosrep.create_region('eastus', 'host=''10.0.0.1');

-- none of the rejected calls created a region
SELECT count(*) AS regions FROM cosmosrep.regions;

-- Bad input: a version while the database is not yet a region
SELECT cosmosrep.next_version();

-- the first region of a group gets id 1 and is the local region
SELECT cosmosrep.create_region('eastus2',
    'host=10.0.0.1 port=5432 dbname=shop user=app password=s3cret');
SELECT region_id, region_name, is_local, dsn, failover_priority,
       created_at <= now() AS created_before_now
  FROM cosmosrep.regions;

-- this session sees the new region at once: versions carry its id
SELECT cosmosrep.version_region(cosmosrep.next_version()) AS version_region;

-- Bad input: creating the region a second time, under the same name
SELECT cosmosrep.create_region('eastus2', 'host=10.0.0.1 dbname=shop');

-- Bad input: creating a second region in the same database
SELECT cosmosrep.create_region('westeurope', 'host=10.0.0.2 dbname=shop');

-- Bad input: an invalid name is reported before the existing region
SELECT cosmosrep.create_region('West Europe', 'host=10.0.0.2 dbname=shop');

-- the region is unchanged
SELECT region_id, region_name, is_local, dsn FROM cosmosrep.regions;

--
-- Connection secrets
--

-- redact_dsn drops the password and quotes every value
SELECT cosmosrep.redact_dsn('host=10.0.0.1 password=s3cret user=''o\''brien'' options=''-c x=\\1''');
SELECT cosmosrep.redact_dsn('postgresql://app:s3cret@10.0.0.1:5433/shop?sslmode=require');
SELECT cosmosrep.redact_dsn('');

-- the redacted string is itself a valid connection string, and redacting
-- it again changes nothing
SELECT cosmosrep.redact_dsn(d) = d AS round_trips
  FROM cosmosrep.redact_dsn('host=10.0.0.1 password=s3cret user=''o\''brien'' options=''-c x=\\1''') d;

-- Bad input: redact_dsn of an invalid connection string
SELECT cosmosrep.redact_dsn('password');

CREATE ROLE regress_cr_reader;
CREATE ROLE regress_cr_settings_reader IN ROLE pg_read_all_settings;
-- reach the schema independently of what the extension grants on it
GRANT USAGE ON SCHEMA cosmosrep TO regress_cr_reader, regress_cr_settings_reader;

-- an ordinary user sees the regions, without the password
SET ROLE regress_cr_reader;
SELECT region_id, region_name, is_local, dsn FROM cosmosrep.regions;

-- Bad input: an ordinary user reads the configuration table directly
SELECT dsn FROM cosmosrep.region;

-- Bad input: an ordinary user creates a region
SELECT cosmosrep.create_region('westeurope', 'host=10.0.0.2 dbname=shop');
RESET ROLE;

-- a member of pg_read_all_settings sees the whole connection string
SET ROLE regress_cr_settings_reader;
SELECT region_name, dsn FROM cosmosrep.regions;
RESET ROLE;

-- still one region, unchanged
SELECT region_id, region_name, is_local, dsn FROM cosmosrep.regions;

REVOKE USAGE ON SCHEMA cosmosrep FROM regress_cr_reader, regress_cr_settings_reader;
DROP EXTENSION cosmosrep CASCADE;
DROP ROLE regress_cr_reader, regress_cr_settings_reader;
