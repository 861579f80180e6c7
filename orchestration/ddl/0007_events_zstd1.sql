-- events' big columns at ZSTD(1) instead of ZSTD(3): writing them was the largest part of a propagation
-- window's insert (bench/README.md), and level 1 costs little space on JSON-like text. A codec change is
-- metadata only: existing parts keep their codec until they are merged.
ALTER TABLE {{ db }}.events {{ on_cluster }}
    MODIFY COLUMN input String CODEC(ZSTD(1)),
    MODIFY COLUMN output String CODEC(ZSTD(1)),
    MODIFY COLUMN metadata Map(String, String) CODEC(ZSTD(1)),
    MODIFY COLUMN trace_metadata Map(String, String) CODEC(ZSTD(1));
