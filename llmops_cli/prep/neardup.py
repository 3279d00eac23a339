"""Near-duplicate removal across splits: MinHash LSH finds candidates, exact Jaccard decides.

While rows stream through prep, each row's dedup key is appended to a spool file on disk and its MinHash
signature (computed in vectorised batches) is reduced at once to `bands` 32-bit band hashes: about 4 bytes
per band per row stay in memory, nothing else. The banding (`bands` x `rows` permutations) is chosen from
the threshold so that a pair at the threshold fails to share a band with probability <= `max_miss`
(P(candidate | J) = 1 - (1 - J^rows)^bands); pairs above it are missed even less often.

Once every row has its split, rows are visited in priority order: test first, then validation, then
train. A row's candidates are the already kept rows that share a band hash with it (grouped per band by
sorting, not with bucket dicts); the first candidate, in that order, whose exact Jaccard similarity on the
word n-gram shingles (re-read from the spool) reaches the threshold removes the row. Candidates are first
filtered in bulk on each row's distinct 64-bit n-gram hashes (spooled at add time too): that hashed Jaccard
is never below the exact one (see `_first_match`), so the exact check runs only where it can succeed, and
rows sharing a long template (all mutual candidates) stay cheap. So, up to the LSH miss
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
_CHUNK_GRAMS = 1 << 18  # candidate n-gram hashes filtered per vectorised step (2 MB of uint64)
_TABLE_BITS = 16  # membership table of one row's n-gram hashes: 64 KB of bools, refilled per row


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


def _grams(words: list[int], lengths: list[int], h: _Hashes) -> np.ndarray:
    """64-bit n-gram hashes of a batch of rows given as word hashes, row after row (len - n + 1 per row)."""
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
    return grams[keep]


def _signatures(words: list[int], lengths: list[int], h: _Hashes, grams: np.ndarray | None = None) -> np.ndarray:
    """MinHash signatures (perms x rows, uint64 holding 32-bit values) of a batch of rows given as word hashes."""
    import numpy as np

    n = h.ngram
    if grams is None:
        grams = _grams(words, lengths, h)
    ends = np.cumsum(lengths)
    with np.errstate(over="ignore"):
        grams = (grams * h.fold) >> np.uint64(32)
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
        # each row's sorted distinct 64-bit n-gram hashes, spooled next to the keys: the bulk filter's input
        self._gram_spool = tempfile.TemporaryFile(dir=spool_dir, prefix="neardup-grams-")
        self._gram_offsets = array("Q", [0])  # in hashes
        self._collide: set[int] = set()  # rows where two distinct n-grams share a hash (~never at 64 bits)
        self.candidate_pairs = 0  # (row, kept candidate) pairs that resolve looked at
        self.exact_checks = 0  # of them, the ones the hashed Jaccard could not reject

    @property
    def bytes_per_row(self) -> int:
        """Memory the index holds per row: the band hashes and the row's two spool offsets."""
        return self.bands * 4 + self._offsets.itemsize + self._gram_offsets.itemsize

    @property
    def nbytes(self) -> int:
        """Memory the index holds now (allocated blocks, offsets, pending batch)."""
        return (sum(b.nbytes for b in self._blocks) + len(self._offsets) * self._offsets.itemsize
                + len(self._gram_offsets) * self._gram_offsets.itemsize
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

        grams = _grams(self._words, self._lengths, self._hashes)
        self._spool_grams(grams, self._lengths)
        sig = _signatures(self._words, self._lengths, self._hashes, grams)
        del grams
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

    def _spool_grams(self, grams: np.ndarray, lengths: list[int]) -> None:
        """Append each row's sorted distinct n-gram hashes to the gram spool. A row with fewer distinct hashes
        than distinct n-grams (a 64-bit collision inside the row; checked on the text only when the row has
        repeated hashes) is remembered: the hashed Jaccard is an upper bound only for rows without one."""
        import numpy as np

        per_row = np.asarray(lengths, dtype=np.int64) - (self.ngram - 1)
        row = np.repeat(np.arange(len(lengths)), per_row)
        order = np.lexsort((grams, row))
        grams, row = grams[order], row[order]
        first = np.ones(len(grams), dtype=bool)
        first[1:] = (grams[1:] != grams[:-1]) | (row[1:] != row[:-1])
        distinct = np.bincount(row[first], minlength=len(lengths))
        self._gram_spool.write(grams[first].tobytes())
        base = len(self._gram_offsets) - 1
        total = self._gram_offsets[-1]
        for count in distinct.tolist():
            total += count
            self._gram_offsets.append(total)
        repeated = np.flatnonzero(distinct < per_row).tolist()
        if repeated:
            self._spool.flush()
            for r in repeated:
                start, end = self._offsets[base + r], self._offsets[base + r + 1]
                data = os.pread(self._spool.fileno(), end - start, start) if end > start else b""
                if len(set(_shingles(data, self.ngram))) != int(distinct[r]):
                    self._collide.add(base + r)

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
        self._gram_spool.flush()
        offsets = np.frombuffer(self._gram_offsets, dtype=np.uint64).astype(np.int64)
        return self._resolve(order, groups, offsets)

    def _read_grams(self, rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The spooled n-gram hashes of some rows (ascending indices), concatenated, and their counts. Read
        with pread, not mmap: mapped pages of the whole spool would count in the process's RSS."""
        import numpy as np

        starts, lens = offsets[rows], offsets[rows + 1] - offsets[rows]
        fd = self._gram_spool.fileno()
        span = int(offsets[rows[-1] + 1] - starts[0])
        if span <= 4 * int(lens.sum()):  # dense (the template case): one read, then gather
            data = np.frombuffer(os.pread(fd, span * 8, int(starts[0]) * 8), dtype=np.uint64)
            first = np.cumsum(lens) - lens
            return data[np.repeat(starts - starts[0] - first, lens) + np.arange(int(lens.sum()))], lens
        parts = [os.pread(fd, n * 8, s * 8) for s, n in zip(starts.tolist(), lens.tolist(), strict=True)]
        return np.frombuffer(b"".join(parts), dtype=np.uint64), lens

    def _resolve(self, order: np.ndarray, groups: np.ndarray, offsets: np.ndarray) -> dict[int, tuple[int, float]]:
        import numpy as np

        kept_in: dict[int, array] = {}  # group x bands + band -> positions of its kept rows, in order
        removed: dict[int, tuple[int, float]] = {}
        bands = self.bands
        for pos in np.flatnonzero((groups >= 0).any(axis=1)).tolist():  # rows in priority order
            mine = [g * bands + k for k, g in enumerate(groups[pos].tolist()) if g >= 0]
            lists = [kept_in[g] for g in mine if g in kept_in]
            row = int(order[pos])  # numpy scalars, not a list: a Python int per row costs 36 bytes
            if lists:
                found = np.concatenate([np.frombuffer(a, dtype=np.int32) for a in lists])
                # positions are priority order: the first match in it is the row kept
                match = self._first_match(row, order[np.unique(found)], offsets)
                if match is not None:
                    removed[row] = match
                    continue
            for g in mine:
                kept_in.setdefault(g, array("i")).append(pos)
        return removed

    def _first_match(self, i: int, candidates: np.ndarray, offsets: np.ndarray) -> tuple[int, float] | None:
        """The first candidate whose exact Jaccard with row i reaches the threshold.

        Candidates are filtered in bulk on the rows' distinct n-gram hashes first. Counting a candidate hash
        as shared when its slot in row i's membership table is set over-counts (slot or 64-bit collisions),
        never under-counts the shared n-grams of two rows without an in-row collision, whose distinct hash
        counts are their distinct n-gram counts: so the hashed c / (|A| + |B| - c), increasing in c, is >= the
        exact Jaccard, and a candidate below the threshold on it is not a near-duplicate. The exact set check
        runs only on the candidates that pass (and on rows with an in-row collision).
        """
        import numpy as np

        self.candidate_pairs += len(candidates)
        if i in self._collide:
            passing = np.arange(len(candidates))
        else:
            passing = self._hash_filter(i, candidates, offsets)
            if self._collide:
                flagged = [k for k, j in enumerate(candidates.tolist()) if j in self._collide]
                passing = np.union1d(passing, np.asarray(flagged, dtype=np.int64))
        for j in candidates[passing].tolist():  # in priority order
            match = self._exact(i, j)
            if match is not None:
                return match
        return None

    def _hash_filter(self, i: int, candidates: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Positions (ascending) in `candidates` whose hashed Jaccard with row i reaches the threshold."""
        import numpy as np

        shift = np.uint64(64 - _TABLE_BITS)
        fold = self._hashes.fold
        mine, _ = self._read_grams(np.array([i]), offsets)
        table = np.zeros(1 << _TABLE_BITS, dtype=bool)
        with np.errstate(over="ignore"):
            table[(mine * fold) >> shift] = True
        by_index = np.argsort(candidates, kind="stable")  # file order: dense spans are read at once
        ends = np.cumsum((offsets[candidates + 1] - offsets[candidates])[by_index])
        passing: list[np.ndarray] = []
        done = 0
        while done < len(candidates):  # chunks of about _CHUNK_GRAMS hashes: bounded memory
            stop = max(done + 1, int(np.searchsorted(ends, (ends[done - 1] if done else 0) + _CHUNK_GRAMS, "right")))
            part = by_index[done:stop]
            grams, lens = self._read_grams(candidates[part], offsets)
            with np.errstate(over="ignore"):
                hit = table[(grams * fold) >> shift]
            common = np.add.reduceat(hit, np.cumsum(lens) - lens, dtype=np.int64)
            passing.append(part[common / (len(mine) + lens - common) >= self.threshold])
            done = stop
        return np.sort(np.concatenate(passing))

    def _exact(self, i: int, j: int) -> tuple[int, float] | None:
        self.exact_checks += 1
        mine, theirs = self._shingle_set(i), self._shingle_set(j)
        common = len(mine & theirs)
        sim = common / (len(mine) + len(theirs) - common)
        return (j, sim) if sim >= self.threshold else None

    def close(self) -> None:
        """Delete the spools of dedup keys and n-gram hashes (the index can no longer compare rows)."""
        self._spool.close()
        self._gram_spool.close()
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._offsets) - 1
