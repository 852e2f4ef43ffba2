--
-- Join and remove settings: the waits of cosmosrep.join_region and
-- cosmosrep.remove_region exist with their defaults, units and ranges.
--

-- the settings, their defaults, units and ranges
SELECT name, setting, unit, min_val, max_val, context
  FROM pg_catalog.pg_settings
 WHERE name IN ('cosmosrep.join_catchup_timeout',
                'cosmosrep.remove_worker_timeout',
                'cosmosrep.remove_slot_timeout')
 ORDER BY name;

-- the defaults, as an operator reads them
SHOW cosmosrep.join_catchup_timeout;
SHOW cosmosrep.remove_worker_timeout;
SHOW cosmosrep.remove_slot_timeout;

-- a superuser may change them for a session
SET cosmosrep.join_catchup_timeout = '10min';
SHOW cosmosrep.join_catchup_timeout;
RESET cosmosrep.join_catchup_timeout;

-- Bad input: a catch-up timeout under one second
SET cosmosrep.join_catchup_timeout = '500ms';

-- Bad input: a slot timeout of zero
SET cosmosrep.remove_slot_timeout = 0;
