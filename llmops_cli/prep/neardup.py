"""Near-duplicate removal across splits: MinHash LSH finds candidates, exact Jaccard decides.

While rows stream through prep, each row's dedup key is appended to a spool file on disk and its MinHash
signature (computed in vectorised batches) is reduced at once to `bands` 32-bit band hashes: about 4 bytes
per band per row stay in memory, nothing else. The banding (`bands` x `rows` permutations) is chosen from
the threshold so that a pair at the threshold fails to share a band with probability <= `max_miss`
(P(candidate | J) = 1 - (1 - J^rows)^bands); pairs above it are missed even less often.

Once every row has its split, rows are visited in priority order: test first, then validation, then
train. A row's candidates are the already kept rows that share a band hash with it (grouped per band by
sorting, not with bucket dicts); the first candidate, in that order, whose exact Jaccard similarity on the
word n-gram shingles (re-read from the spool) reaches the threshold removes the row. So, up to the LSH miss
probability, no two surviving rows (in any splits) are near-duplicates: a near-duplicate of a test or
validation example never stays in train, and within a split the first occurrence is kept.
"""

from __future__ import annotations

import math
import os
import tempfile
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where it is used: a config check needs only lsh_bands
    import numpy as np

PRIORITY = ("test", "validation", "train")
MAX_MISS = 1e-6
_MASK64 = (1 << 64) - 1
_PAD = 1 << 32  # stands for missing words in a row shorter than one n-gram: no crc32 equals it
_BLOCK = 1 << 16  # rows of band hashes per preallocated block
_FLUSH_SHINGLES = 1 << 14  # shingles per vectorised MinHash batch: (shingles x perms) uint64 stays ~30 MB
_SHINGLE_CACHE = 1024  # shingle sets of recent candidates (a kept row with many near-dups is read once)


def shingles(text: str, n: int) -> list[bytes]:
    """Word n-grams of the dedup key (case, punctuation and spacing already folded)."""
    return _shingles(text.encode("utf-8"), n)


def _shingles(data: bytes, n: int) -> list[bytes]:
    words = data.split()
    if len(words) <= n:
        return [b" ".join(words)]
    return [b" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """P(a pair at this Jaccard similarity shares at least one band) = 1 - (1 - J^rows)^bands."""
    return 1 - (1 - similarity**rows) ** bands


def lsh_bands(threshold: float, max_miss: float, max_perm: int) -> tuple[int, int]:
    """(bands, rows per band) with bands x rows <= max_perm and P(miss at the threshold) <= max_miss.

    Of the bandings that reach max_miss, the one with the most rows per band: its S-curve is the steepest,
    so the fewest pairs below the threshold become candidates that the exact check has to reject.
    """
    best: tuple[int, int] | None = None
    for rows in range(1, max_perm + 1):
        bands = max(1, math.ceil(math.log(max_miss) / math.log1p(-(threshold**rows))))
        while (1 - threshold**rows) ** bands > max_miss:  # float rounding in the closed form
            bands += 1
        if bands * rows > max_perm:
            break  # more rows per band need even more permutations
        best = (bands, rows)
    if best is None:
        raise ValueError(f"no LSH banding of at most {max_perm} permutations misses a pair at Jaccard {threshold} "
                         f"with probability <= {max_miss}: raise prep.near_dup.num_perm or the threshold")
    return best


class _Hashes:
    """The fixed random parameters of the MinHash permutations and of the n-gram and band hashes."""

    def __init__(self, perms: int, ngram: int, rows: int, seed: int = 1) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)

        def draw(k: int) -> np.ndarray:  # odd 64-bit numbers
            return rng.integers(0, 2**63, size=k, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

        self.gram = draw(ngram)  # odd multipliers combining the word hashes of one n-gram
        self.fold = draw(1)[0]  # multiply-shift of the 64-bit n-gram hash down to 32 bits
        # Multiply-add-shift ((a*x + b) mod 2^64) >> 32 on 32-bit keys: a 2-independent permutation family.
        self.a, self.b = draw(perms), rng.integers(0, 2**63, size=perms, dtype=np.uint64)
        self.band = draw(rows)
        self.ngram = ngram


def _words(text: str, ngram: int) -> list[int]:
    words = list(map(zlib.crc32, text.encode("utf-8").split()))  # crc32: the same in every process
    return words + [_PAD] * (ngram - len(words)) if len(words) < ngram else words


def _signatures(words: list[int], lengths: list[int], h: _Hashes) -> np.ndarray:
    """MinHash signatures (perms x rows, uint64 holding 32-bit values) of a batch of rows given as word hashes."""
    import numpy as np

    w = np.array(words, dtype=np.uint64)
    n = h.ngram
    with np.errstate(over="ignore"):
        grams = w[: len(w) - n + 1] * h.gram[0]
        for k in range(1, n):
            grams += w[k: len(w) - n + 1 + k] * h.gram[k]
        ends = np.cumsum(lengths)
        # n-grams crossing from one row into the next are dropped; every row keeps len - n + 1 >= 1 of them
        keep = np.ones(len(grams), dtype=bool)
        for k in range(1, n):
            keep[ends[:-1] - k] = False
        grams = (grams[keep] * h.fold) >> np.uint64(32)
        # perms x shingles: each permutation is one contiguous pass over the shingles (the transposed layout
        # is several times slower in numpy)
        values = np.empty((len(h.a), len(grams)), dtype=np.uint64)
        np.multiply(h.a[:, None], grams[None, :], out=values)
        values += h.b[:, None]
    first = ends - np.asarray(lengths) - np.arange(len(lengths)) * (n - 1)
    return np.minimum.reduceat(values, first, axis=1) >> np.uint64(32)  # >> 32 is monotone: after the min


def minhash_signatures(texts: list[str], perms: int, ngram: int) -> np.ndarray:
    """MinHash signatures of some dedup keys (rows x perms), as the index computes them."""
    words: list[int] = []
    lengths: list[int] = []
    for text in texts:
        w = _words(text, ngram)
        words += w
        lengths.append(len(w))
    return _signatures(words, lengths, _Hashes(perms, ngram, 1)).T


class NearDupIndex:
    """Collects band hashes while streaming, then resolves near-duplicates across splits.

    `num_perm` is the permutation budget; the banding within it comes from `lsh_bands`. The dedup keys
    are spooled to a temporary file (in `spool_dir`), which disappears when the index is closed.
    """

    def __init__(self, threshold: float, num_perm: int, ngram: int, max_miss: float = MAX_MISS,
                 spool_dir: str | Path | None = None) -> None:
        self.threshold, self.ngram, self.max_miss = threshold, ngram, max_miss
        self.bands, self.rows = lsh_bands(threshold, max_miss, num_perm)
        self._hashes = _Hashes(self.bands * self.rows, ngram, self.rows)
        self._spool = tempfile.TemporaryFile(dir=spool_dir, prefix="neardup-")
        self._offsets = array("Q", [0])
        self._blocks: list[np.ndarray] = []
        self._filled = _BLOCK  # rows used in the last block
        self._words: list[int] = []
        self._lengths: list[int] = []
        self._cache: OrderedDict[int, set[bytes]] = OrderedDict()

    @property
    def bytes_per_row(self) -> int:
        """Memory the index holds per row: the band hashes and the row's spool offset."""
        return self.bands * 4 + self._offsets.itemsize

    @property
    def nbytes(self) -> int:
        """Memory the index holds now (allocated blocks, offsets, pending batch)."""
        return (sum(b.nbytes for b in self._blocks) + len(self._offsets) * self._offsets.itemsize
                + 8 * (len(self._words) + len(self._lengths)))

    def add(self, key_text: str) -> int:
        """Index one row (its dedup key); returns the row's index."""
        data = key_text.encode("utf-8")
        self._spool.write(data)
        self._offsets.append(self._offsets[-1] + len(data))
        before = len(self._words)
        self._words.extend(map(zlib.crc32, data.split()))  # crc32: the same in every process
        count = len(self._words) - before
        if count < self.ngram:
            self._words += [_PAD] * (self.ngram - count)
        self._lengths.append(max(count, self.ngram))
        if len(self._words) >= _FLUSH_SHINGLES:
            self._flush()
        return len(self._offsets) - 2

    def _flush(self) -> None:
        if not self._lengths:
            return
        import numpy as np

        sig = _signatures(self._words, self._lengths, self._hashes)
        count = sig.shape[1]
        with np.errstate(over="ignore"):
            sig = sig.reshape(self.bands, self.rows, count) * self._hashes.band[None, :, None]
            bands = sig.sum(axis=1, dtype=np.uint64)
        bands = (bands >> np.uint64(32)).astype(np.uint32)  # the high half: the best-mixed bits
        self._words, self._lengths = [], []
        done = 0
        while done < count:
            if self._filled == _BLOCK:
                # bands x rows: one band of all rows is contiguous when resolve reads it
                self._blocks.append(np.empty((self.bands, _BLOCK), dtype=np.uint32))
                self._filled = 0
            take = min(_BLOCK - self._filled, count - done)
            self._blocks[-1][:, self._filled:self._filled + take] = bands[:, done:done + take]
            self._filled += take
            done += take

    def _band(self, k: int) -> np.ndarray:
        import numpy as np

        return np.concatenate([*(b[k] for b in self._blocks[:-1]), self._blocks[-1][k, : self._filled]])

    def _shingle_set(self, i: int) -> set[bytes]:
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            return cached
        start, end = self._offsets[i], self._offsets[i + 1]
        data = os.pread(self._spool.fileno(), end - start, start) if end > start else b""
        found = set(_shingles(data, self.ngram))
        self._cache[i] = found
        if len(self._cache) > _SHINGLE_CACHE:
            self._cache.popitem(last=False)
        return found

    def jaccard(self, a: int, b: int) -> float:
        """Exact Jaccard similarity of two rows' shingle sets."""
        self._spool.flush()
        sa, sb = self._shingle_set(a), self._shingle_set(b)
        return len(sa & sb) / len(sa | sb)

    def _groups(self, order: np.ndarray) -> np.ndarray:
        """(rows x bands) int32, rows in priority position: the id of the row's group in each band (the rows
        with an equal band hash, found by sorting), or -1 where no other row has its hash. A dense matrix
        keeps the memory at 4 bytes per row and band however many rows collide."""
        import numpy as np

        groups = np.full((len(order), self.bands), -1, dtype=np.int32)
        for k in range(self.bands):
            col = self._band(k)[order]
            perm = np.argsort(col, kind="stable")
            ordered = col[perm]
            same = ordered[1:] == ordered[:-1]
            member = np.zeros(len(col), dtype=bool)
            member[1:] |= same
            member[:-1] |= same
            ids = np.cumsum(np.concatenate(([False], ~same)), dtype=np.int32)
            groups[perm[member], k] = ids[member]
        return groups

    def resolve(self, splits: Iterable[str]) -> dict[int, tuple[int, float]]:
        """For each removed row index: (index of the kept row it duplicates, exact Jaccard).

        `splits` gives the split of every row, in index order.
        """
        split_of = list(splits)
        if len(split_of) != len(self):
            raise ValueError(f"{len(split_of)} splits for {len(self)} indexed rows")
        self._flush()
        self._spool.flush()
        if not split_of:
            return {}
        import numpy as np

        code = {name: n for n, name in enumerate(PRIORITY)}
        rank = np.fromiter((code[s] for s in split_of), dtype=np.int8, count=len(split_of))
        order = np.argsort(rank, kind="stable")  # test, validation, train; then in input order
        del rank
        groups = self._groups(order)
        kept_in: dict[int, list[int]] = {}  # group x bands + band -> positions of its kept rows, in order
        removed: dict[int, tuple[int, float]] = {}
        bands = self.bands
        for pos in np.flatnonzero((groups >= 0).any(axis=1)).tolist():  # rows in priority order
            mine = [g * bands + k for k, g in enumerate(groups[pos].tolist()) if g >= 0]
            candidates = sorted({c for g in mine for c in kept_in.get(g, ())})
            row = int(order[pos])  # numpy scalars, not a list: a Python int per row costs 36 bytes
            match = self._first_match(row, [int(order[c]) for c in candidates])
            if match is not None:
                removed[row] = match
                continue
            for g in mine:
                kept_in.setdefault(g, []).append(pos)
        return removed

    def _first_match(self, i: int, candidates: list[int]) -> tuple[int, float] | None:
        if not candidates:
            return None
        mine = self._shingle_set(i)
        for j in candidates:
            theirs = self._shingle_set(j)
            common = len(mine & theirs)
            sim = common / (len(mine) + len(theirs) - common)
            if sim >= self.threshold:
                return j, sim
        return None

    def close(self) -> None:
        """Delete the spool of dedup keys (the index can no longer compare rows)."""
        self._spool.close()
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._offsets) - 1
