"""The raw S3 bucket: the source of truth, written by collectors and SDK front doors, not by Dagster."""

import dagster as dg

raw_batches = dg.AssetSpec(
    key="raw_batches",
    description=(
        "Immutable raw batches in S3 (OTLP JSON/protobuf, legacy ingestion JSON, Parquet) under "
        "{RAW_PREFIX}{project_id}/{kind}/year=/month=/day=/hour=/minute=/. Observed by raw_bucket_sensor."
    ),
    group_name="ingest",
    kinds={"s3"},
)
