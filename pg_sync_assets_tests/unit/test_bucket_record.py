"""The verified record's bucket sums as bytes: what a run writes, the next run reads
back unchanged, and records written by earlier versions stay readable. No database."""

from __future__ import annotations

import random
import struct

import pytest

from pg_sync_assets.engine.verify.buckets import INTEGER_BLOCKS, Bucketing, BucketSums

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
    packed = BucketSums.from_dict(BUCKETING, 64, sums).pack()
    assert packed == earlier_pack(sums)
    assert BucketSums.unpack(BUCKETING, 64, packed).as_dict() == sums


def test_many_buckets_read_back_in_the_earlier_encoding():
    rng = random.Random(20261123)
    sums = {b: (rng.randint(1, 40), rng.randint(-(2**67), 2**67)) for b in rng.sample(range(1 << 17), 5000)}
    packed = BucketSums.from_dict(BUCKETING, 1 << 17, sums).pack()
    assert packed == earlier_pack(sums)
    back = BucketSums.unpack(BUCKETING, 1 << 17, earlier_pack(sums))
    assert back.as_dict() == sums
    assert back.total.rows == sum(n for n, _ in sums.values())
    assert back.total.checksum == sum(t for _, t in sums.values())


def test_no_buckets_pack_to_nothing():
    assert BucketSums.from_dict(BUCKETING, 64, {}).pack() == b""
    assert BucketSums.unpack(BUCKETING, 64, b"").as_dict() == {}


def test_compare_names_the_differing_buckets_and_counts_the_filled_ones():
    rng = random.Random(7)
    sums = {b: (rng.randint(1, 9), rng.randint(-(2**66), 2**66)) for b in rng.sample(range(1 << 16), 3000)}
    source = BucketSums.from_dict(BUCKETING, 1 << 16, sums)
    changed = dict(sums)
    moved = sorted(changed)[:5]
    for b in moved[:3]:
        changed[b] = (changed[b][0], changed[b][1] + 1)  # a changed row
    del changed[moved[3]]  # a bucket the target lacks
    changed[(1 << 16) - 1] = (1, 5)  # a bucket only the target has (assumed empty in the source)
    target = BucketSums.from_dict(BUCKETING, 1 << 16, changed)
    filled, differing = source.compare(target)
    assert filled == len(set(sums) | set(changed))
    assert differing == sorted([*moved[:4], (1 << 16) - 1])
    assert source.compare(source) == (len(sums), [])


@pytest.mark.parametrize("chunk", [1, 7, 28, 4096, 10**6])
def test_the_binary_copy_of_the_packed_sums_reads_back_whatever_the_chunks(chunk):
    """What `stage_bucket_sums` sends is a valid one-row binary COPY whose field is
    `pack()`; `read_bucket_sums` rebuilds the sums from it however the bytes arrive."""
    from pg_sync_assets.engine.verify.buckets import _HEADER, _CopyIn, _CopyOut

    rng = random.Random(chunk)
    sums = {b: (rng.randint(1, 40), rng.randint(-(2**100), 2**100)) for b in rng.sample(range(1 << 15), 2000)}
    original = BucketSums.from_dict(BUCKETING, 1 << 15, sums)
    stream = _CopyIn(original)
    sent = b"".join(iter(lambda: stream.read(chunk), b""))
    packed = original.pack()
    assert sent == _HEADER + struct.pack(">hi", 1, len(packed)) + packed + struct.pack(">h", -1)
    out = _CopyOut(BucketSums(BUCKETING, 1 << 15))
    for start in range(0, len(sent), chunk):
        out.write(sent[start : start + chunk])
    assert out.found and out.sums.as_dict() == sums
    empty = _CopyOut(BucketSums(BUCKETING, 64))
    empty.write(_HEADER + struct.pack(">hi", 1, -1) + struct.pack(">h", -1))  # a NULL value
    assert not empty.found
