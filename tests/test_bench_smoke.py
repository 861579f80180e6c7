"""A smoke run of the benchmark stages at a tiny scale: the code that produces bench/results keeps working.
(The figures themselves are not asserted: speed is measured by `tracehouse bench`, not by tests.)"""

import json

from bench.run import markdown, run, write_results


def test_bench_stages_run_and_write_results(env, s3, ch, tmp_path, monkeypatch):
    monkeypatch.setattr("bench.propagation.SETTLE_QUIET_SECONDS", 0.2)  # tiny tables: merges are quick
    result = run(
        ch,
        s3,
        env,
        scale=0.003,
        only=("ingest", "propagation", "summaries", "reads", "migration"),
        results_dir=tmp_path,
    )
    assert set(result["figures"]) == {"ingest", "propagation", "summaries", "reads", "migration"}
    assert result["figures"]["ingest"]["otlp_json"]["spans"] > 0
    propagation = result["figures"]["propagation"]
    assert len(propagation["runs"]) == 4 and all(r["floor_rows_per_s"] > 0 for r in propagation["runs"])
    largest = max(r["window"] for r in propagation["runs"])
    assert [f["rows"] for f in propagation["floor_insert_copy"]] == [largest, largest]  # one per history
    assert result["machine"]["buffered_write"]["mb_s"] > 0
    assert all(r["concurrency"] in (1, 2, 4) for r in result["figures"]["migration"]["runs"])
    summaries = result["figures"]["summaries"]
    assert all(f["whole"] for f in summaries["whole"].values())
    for refreshed in summaries["refresh"].values():  # one window of new traces: its keys, not the history's
        traces = refreshed["trace_summaries"]
        assert 0 < traces["changed_keys"] == traces["rows"] <= summaries["window"] and not traces["whole"]
    json_path, md_path = write_results(result, tmp_path)
    assert json.loads(json_path.read_text())["scale"] == 0.003
    assert (
        "## Reads" in md_path.read_text()
        and "## Summary refresh" in md_path.read_text()
        and markdown(result).startswith("# tracehouse bench")
    )
