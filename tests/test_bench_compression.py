"""The compression scenario (bench/compression.py) on the real Kafka, tiny:
each variant's messages are all processed, the sizes it reports are Kafka's,
and its goals are evaluated from them."""

from __future__ import annotations

import dataclasses
import sys
import uuid
from pathlib import Path

import pytest

# bench/ is a top-level folder run with ``python -m bench``, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cleanup, goals  # noqa: E402
from bench.compression import VARIANTS, measure  # noqa: E402
from bench.config import QUICK  # noqa: E402
from bench.scenarios import Context  # noqa: E402
from willowe_tasks import payload_dictionary  # noqa: E402

BY_KEY = {v.key: v for v in VARIANTS}


def test_compressed_variants_store_the_guide_messages_smaller_and_drain_them_all(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    ctx = Context(dataclasses.replace(QUICK, threads=2, partitions=1), kafka_bootstrap,
                  f"smoke{uuid.uuid4().hex[:8]}", tmp_path, record_bytes=230)
    bodies = list(payload_dictionary.sample_bodies(300, seed=5))
    found = {}
    try:
        for key in ("plain_off", "plain_on", "sealed_off", "sealed_on"):
            # (measure raises if the drain doesn't process every message.)
            found[key] = measure(ctx, BY_KEY[key], f"bench-{ctx.run_id}-{key.replace('_', '-')}",
                                 bodies, single=20)
    finally:
        cleanup.delete_run(kafka_bootstrap, f"bench-{ctx.run_id}")

    raw = sum(map(len, bodies)) / len(bodies)
    # Uncompressed, a record costs its body plus headers and framing on disk.
    assert found["plain_off"]["bytes_per_msg"] > raw
    assert found["sealed_off"]["bytes_per_msg"] > found["plain_off"]["bytes_per_msg"]
    # The shipped settings: at least 2x smaller, encryption off and on.
    assert found["plain_on"]["bytes_per_msg"] < found["plain_off"]["bytes_per_msg"] / 2
    assert found["sealed_on"]["bytes_per_msg"] < found["sealed_off"]["bytes_per_msg"] / 2
    assert all(f["batch_rate"] > 0 and f["drain_rate"] > 0 for f in found.values())

    row = {f"{key}_{metric}": value for key, figures in found.items()
           for metric, value in figures.items()}
    from bench.compression import Compression
    from bench.systems import OURS

    outcome = Compression().summarize(ctx, OURS, [row], {"n": 300, "single": 20})
    evaluated = [g for g in goals.evaluate({"compression": {"ours": outcome}})
                 if g["goal"].startswith("compression")]
    [plain_bytes] = [g for g in evaluated if g["goal"].startswith(
        "compression, encryption off: bytes/msg")]
    assert plain_bytes["status"] == "pass"
    assert plain_bytes["ratio"] == pytest.approx(
        found["plain_on"]["bytes_per_msg"] / found["plain_off"]["bytes_per_msg"])
    assert all(g["status"] in ("pass", "MISS") for g in evaluated)
