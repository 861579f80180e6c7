-- TTL expiry drops whole parts (staging is partitioned by day) instead of rewriting them row by row:
-- cheaper, and on a replicated cluster one Keeper operation per expired part (see docs/operations.md).
{% for table in ['observations_staging', 'traces_staging', 'scores_staging', 'propagation_keys'] %}
ALTER TABLE {{ db }}.{{ table }} {{ on_cluster }} MODIFY SETTING ttl_only_drop_parts = 1;
{% endfor %}
