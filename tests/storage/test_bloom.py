"""Bloom filters: no false negatives, and false positives near the target."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from kvnode.storage import Engine
from kvnode.storage.bloom import BloomFilter


@given(st.sets(st.binary(max_size=30), max_size=300), st.floats(1.0, 20.0))
def test_never_a_false_negative(keys: set[bytes], bits: float) -> None:
    bloom = BloomFilter.from_bytes(BloomFilter.build(keys, len(keys), bits).to_bytes())
    assert all(bloom.may_contain(k) for k in keys)


@pytest.mark.parametrize("bits_per_key, target", [(10, 0.0082), (5, 0.094), (15, 0.00073)])
def test_false_positive_rate_within_2x_of_target(bits_per_key: int, target: float) -> None:
    # target: (1 - e^(-k/b))^k for b bits per key and the optimal k.
    keys = [b"present-%d" % i for i in range(20_000)]
    bloom = BloomFilter.build(keys, len(keys), bits_per_key)
    trials = 200_000
    hits = sum(bloom.may_contain(b"absent-%d" % i) for i in range(trials))
    rate = hits / trials
    assert rate <= 2 * target, f"false-positive rate {rate:.4%} vs target {target:.4%}"


def test_malformed_bloom_bytes() -> None:
    with pytest.raises(ValueError):
        BloomFilter.from_bytes(b"")
    with pytest.raises(ValueError):
        BloomFilter.from_bytes(b"\x00abc")


def test_engine_skips_tables_by_bloom(tmp_path: Path) -> None:
    with Engine.open(tmp_path, memtable_bytes=16 * 1024, compaction_min_width=50, max_tables=100) as db:
        for i in range(0, 4000, 2):
            db.put(b"key%06d" % i, b"v" * 40)
        db.flush()
        tables = db.stats()["tables"]
        assert tables >= 5
        for i in range(1, 4000, 2):  # absent, but inside every table's range
            assert db.get(b"key%06d" % i) is None
        bloom = db.stats()["bloom"]
    # Each missing key is checked against the tables whose range covers it;
    # nearly all of those checks end at the bloom filter.
    assert bloom["negatives"] > 0
    assert bloom["false_positives"] <= 0.03 * (bloom["negatives"] + bloom["false_positives"])


def test_bloom_off_reads_the_same(tmp_path: Path) -> None:
    with Engine.open(tmp_path, memtable_bytes=8 * 1024) as db:
        for i in range(0, 2000, 2):
            db.put(b"key%06d" % i, b"%d" % i)
        db.flush()
    with Engine.open(tmp_path, bloom=False) as db:
        for i in range(2000):
            assert db.get(b"key%06d" % i) == (b"%d" % i if i % 2 == 0 else None)
        assert db.stats()["bloom"]["negatives"] == 0
