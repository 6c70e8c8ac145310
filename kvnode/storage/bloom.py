"""Bloom filters: one per SSTable, so that a read of a key a table does not hold
usually skips that table without touching its blocks.

m = n * bits_per_key bits and k = round(bits_per_key * ln 2) probes, the optimum
(10 bits per key gives k = 7 and about 0.8% false positives). The k probe
positions come from one 64-bit BLAKE2b hash split in two halves, by double
hashing (Kirsch and Mitzenmacher): position_i = h1 + i * h2 mod m.

Serialized form: k (u8) followed by the bit array; m is the array's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from hashlib import blake2b


def _hashes(key: bytes) -> tuple[int, int]:
    h = int.from_bytes(blake2b(key, digest_size=8).digest(), "little")
    # An odd step visits distinct positions when m is a power of two, and is
    # never zero, so the k probes never collapse onto one bit.
    return h & 0xFFFFFFFF, (h >> 32) | 1


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
            h1, h2 = _hashes(key)
            for i in range(k):
                pos = (h1 + i * h2) % m
                bits[pos >> 3] |= 1 << (pos & 7)
        return cls(bits, k)

    def may_contain(self, key: bytes) -> bool:
        h1, h2 = _hashes(key)
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
