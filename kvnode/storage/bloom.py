"""Bloom filters: one per SSTable, so that a read of a key a table does not hold
usually skips that table without touching its blocks.

m = n * bits_per_key bits and k = round(bits_per_key * ln 2) probes, the optimum
(10 bits per key gives k = 7 and about 0.8% false positives). The k probe
positions come from one 128-bit MurmurHash3 of the key, split into two 64-bit
halves, by double hashing (Kirsch and Mitzenmacher): position_i = h1 + i * h2
mod m. The hash does not depend on the table, so a read hashes its key once
(`key_hash`) and probes every table's filter with the pair; a probe stops at
the first clear bit, so a table that lacks the key costs about two probes.

Serialized form: k (u8) followed by the bit array; m is the array's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import mmh3

KeyHash = tuple[int, int]


def key_hash(key: bytes) -> KeyHash:
    h1, h2 = mmh3.hash64(key, signed=False)
    # An odd, non-zero step keeps the k probes from collapsing onto one bit.
    return h1, h2 | 1


class BloomFilter:
    __slots__ = ("_bits", "_k", "_m")

    def __init__(self, bits: bytearray | bytes, k: int) -> None:
        self._bits = bits
        self._k = k
        self._m = len(bits) * 8

    @classmethod
    def build(cls, keys: Iterable[bytes], count: int, bits_per_key: float) -> BloomFilter:
        m_bytes = max(8, math.ceil(count * bits_per_key / 8))
        k = max(1, min(30, round(bits_per_key * math.log(2))))
        bits = bytearray(m_bytes)
        m = m_bytes * 8
        for key in keys:
            h1, h2 = key_hash(key)
            for i in range(k):
                pos = (h1 + i * h2) % m
                bits[pos >> 3] |= 1 << (pos & 7)
        return cls(bits, k)

    def may_contain(self, key: bytes) -> bool:
        return self.may_contain_hash(key_hash(key))

    def may_contain_hash(self, h: KeyHash) -> bool:
        h1, h2 = h
        bits = self._bits
        m = self._m
        for i in range(self._k):
            pos = (h1 + i * h2) % m
            if not bits[pos >> 3] & (1 << (pos & 7)):
                return False
        return True

    def to_bytes(self) -> bytes:
        return bytes([self._k]) + bytes(self._bits)

    @classmethod
    def from_bytes(cls, data: bytes) -> BloomFilter:
        if len(data) < 2 or not 1 <= data[0] <= 30:
            raise ValueError("malformed bloom filter")
        return cls(data[1:], data[0])
