-- 0008 partitions for the current UTC month through +3 months. The persister
-- keeps creating them ahead of time (create_monthly_partitions() at startup
-- and create_monthly_partitions(from, to) for the months its batches reach).
SELECT create_monthly_partitions();
