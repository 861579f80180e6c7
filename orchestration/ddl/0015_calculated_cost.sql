-- Calculated cost (orchestration/model_prices.py). model_prices: one row per model and pricing tier, loaded
-- from Langfuse's default price list and the user's CSV; seed_hash says what it was loaded from.
CREATE TABLE IF NOT EXISTS {{ db }}.model_prices {{ on_cluster }}
(
    project_id String,                -- '' = every project; a project's own price comes first
    model_id String,
    model_name String,
    match_pattern String,             -- RE2, matched against the observation's model name
    start_date DateTime64(6, 'UTC'),  -- valid for observations that start at or after it
    tier_id String,
    tier_name String,
    tier_priority UInt32,
    tier_is_default Bool,
    usage_conditions Array(Tuple(pattern String, case_sensitive Bool, operator String, value Float64)),
    parameter_conditions Array(Tuple(key String, operator String, values Array(String))),
    prices Map(String, Decimal(18, 12)),
    source LowCardinality(String),
    seed_hash String
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY (project_id, model_id, start_date, tier_id);

-- Per project and model name seen by propagation, the price candidates that match it, in the order a price
-- is chosen (project's own first, latest start date first, conditional tiers before the default). Resolved
-- once per prices version, so the regular expressions run per model name, not per row.
CREATE TABLE IF NOT EXISTS {{ db }}.model_price_matches {{ on_cluster }}
(
    project_id String,
    model_name String,
    prices_version String,
    candidates Array(Tuple(
        project_specific UInt8, start_date DateTime64(6, 'UTC'), is_default UInt8, priority UInt32,
        usage_conditions Array(Tuple(pattern String, case_sensitive Bool, operator String, value Float64)),
        parameter_conditions Array(Tuple(key String, operator String, values Array(String))),
        prices Map(String, Decimal(18, 12)), model_id String)),
    resolved_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY (project_id, model_name);

-- What the observation itself sent, kept apart from cost_details (provided, else calculated). Rows written
-- before this migration read their cost_details: all of it was provided then.
ALTER TABLE {{ db }}.events {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS provided_cost_details Map(String, Float64) DEFAULT cost_details AFTER usage_details;

ALTER TABLE {{ db }}.events_core {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS provided_cost_details Map(String, Float64) DEFAULT cost_details AFTER usage_details;

-- The reader views list events' columns as they were when they were made: made again with the new one.
CREATE OR REPLACE VIEW {{ db }}.events_current {{ on_cluster }} AS
SELECT * FROM {{ db }}.events WHERE {{ visible(db, 'retired') }};

CREATE OR REPLACE VIEW {{ db }}.events_core_current {{ on_cluster }} AS
SELECT * FROM {{ db }}.events_core WHERE {{ visible(db, 'retired') }};
