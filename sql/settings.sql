-- the apply workers' settings, with their defaults, units and ranges
SHOW cosmosrep.apply_group_size;
SHOW cosmosrep.apply_attempts;
SHOW cosmosrep.apply_feedback_interval;
SHOW cosmosrep.apply_timeout;
SHOW cosmosrep.apply_restart_max_delay;
SELECT name, setting, unit, min_val, max_val, context
  FROM pg_settings
 WHERE name LIKE 'cosmosrep.apply%'
 ORDER BY name;
