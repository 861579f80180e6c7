-- What readers must not see yet, or any more: a propagation's rows stay hidden from its insert until it is
-- published, and the rows it supersedes are hidden from that same moment until they are deleted. A
-- propagation (window, migrated part, repair) writes an `in_flight` entry before its insert; one INSERT of
-- its `published` entry together with the `retired` keys of the rows it supersedes switches readers over
-- at once; the lightweight deletes follow, and then its partition is dropped (a metadata operation). So a
-- reader of events_current / events_core_current sees each observation once between the insert and the
-- delete, and after a crash anywhere between them. Partitions left by crashed runs hide nothing once a
-- retry has superseded their rows; they are dropped after a day.
CREATE TABLE IF NOT EXISTS {{ db }}.events_hidden {{ on_cluster }}
(
    propagation_id String,
    kind Enum8('in_flight' = 1, 'published' = 2, 'retired' = 3, 'retired_score' = 4),
    project_id LowCardinality(String),
    id String,
    row_propagation_id String,
    created_at DateTime DEFAULT now()
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY propagation_id
ORDER BY (kind, project_id, id);

CREATE VIEW IF NOT EXISTS {{ db }}.events_current {{ on_cluster }} AS
SELECT * FROM {{ db }}.events WHERE {{ visible(db, 'retired') }};

CREATE VIEW IF NOT EXISTS {{ db }}.events_core_current {{ on_cluster }} AS
SELECT * FROM {{ db }}.events_core WHERE {{ visible(db, 'retired') }};
