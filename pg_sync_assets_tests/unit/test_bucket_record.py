"""The verified record's bucket sums as bytes: what a run writes, the next run reads
back unchanged, and records written by earlier versions stay readable. No database."""

from __future__ import annotations

import random
import struct

import pytest

from pg_sync_assets.engine.record import INTEGER_BLOCKS, Bucketing, BucketSums

BUCKETING = Bucketing(("id",), INTEGER_BLOCKS)


def earlier_pack(sums: dict[int, tuple[int, int]]) -> bytes:
    """The encoding records were written in before the checksum was packed as two halves."""
    return b"".join(
        struct.pack(">iq", b, n) + total.to_bytes(16, "big", signed=True) for b, (n, total) in sorted(sums.items())
    )


EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**64, -(2**64), 2**64 - 1, 2**127 - 1, -(2**127)]


@pytest.mark.parametrize("total", EDGES)
def test_a_checksum_at_the_edges_of_its_halves_reads_back(total):
    sums = {7: (3, total)}
    packed = BucketSums(BUCKETING, 64, sums).pack()
    assert packed == earlier_pack(sums)
    assert BucketSums.unpack(BUCKETING, 64, packed).sums == sums


def test_many_buckets_read_back_in_the_earlier_encoding():
    rng = random.Random(20261123)
    sums = {b: (rng.randint(1, 40), rng.randint(-(2**67), 2**67)) for b in rng.sample(range(1 << 17), 5000)}
    packed = BucketSums(BUCKETING, 1 << 17, sums).pack()
    assert packed == earlier_pack(sums)
    back = BucketSums.unpack(BUCKETING, 1 << 17, earlier_pack(sums))
    assert back.sums == sums
    assert back.total.rows == sum(n for n, _ in sums.values())
    assert back.total.checksum == sum(t for _, t in sums.values())


def test_no_buckets_pack_to_nothing():
    assert BucketSums(BUCKETING, 64, {}).pack() == b""
    assert BucketSums.unpack(BUCKETING, 64, b"").sums == {}
