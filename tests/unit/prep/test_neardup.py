"""Near-dup: the LSH banding's miss probability, exact confirmation, and zero leakage across splits."""

import random
from collections import defaultdict

import pytest

from llmops_cli.prep.config import NearDupSpec
from llmops_cli.prep.neardup import NearDupIndex, shingles

SPLIT_WEIGHTS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))


def _jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b)


def _variant(rng: random.Random, words: list[str], vocab: list[str]) -> list[str]:
    out = list(words)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice(vocab)
    return out


def _planted(seed: int, threshold: float, bases: int) -> tuple[list[str], int, int]:
    """Unrelated rows plus variants of some of them: at J in [threshold, 0.95] (must go when across splits)
    and at J in [threshold - 0.15, threshold) (must stay: false candidates the exact check rejects)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20000)]
    rows = [[rng.choice(vocab) for _ in range(rng.randint(40, 90))] for _ in range(bases)]
    above = below = 0
    for base in list(rows[: bases // 2]):
        base_set = set(shingles(" ".join(base), 3))
        for _ in range(rng.choice((1, 1, 2, 3))):  # clusters of up to four near-identical rows
            for _attempt in range(50):
                words = _variant(rng, base, vocab)
                sim = _jaccard(base_set, set(shingles(" ".join(words), 3)))
                if threshold <= sim <= 0.95 and above <= below * 2:
                    above += 1
                    break
                if threshold - 0.15 <= sim < threshold:
                    below += 1
                    break
            rows.append(words)
    order = list(range(len(rows)))
    rng.shuffle(order)
    return [" ".join(rows[i]) for i in order], above, below


def _similar_pairs(texts: list[str], threshold: float) -> dict[tuple[int, int], float]:
    """Every pair at exact Jaccard >= threshold, by brute force over the pairs sharing any shingle (a pair
    sharing none has Jaccard 0): independent of MinHash and LSH."""
    sets = [set(shingles(t, 3)) for t in texts]
    postings: dict[bytes, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            postings[sh].append(i)
    pairs: set[tuple[int, int]] = set()
    for rows in postings.values():
        pairs.update((a, b) for k, a in enumerate(rows) for b in rows[k + 1:])
    found = {}
    for a, b in pairs:
        sim = _jaccard(sets[a], sets[b])
        if sim >= threshold:
            found[a, b] = sim
    return found


def test_default_banding_misses_a_pair_at_the_threshold_with_probability_below_1e_6():
    from llmops_cli.prep.neardup import candidate_probability, lsh_bands

    spec = NearDupSpec()
    bands, rows = lsh_bands(spec.threshold, spec.max_miss, spec.num_perm)
    assert spec.max_miss <= 1e-6 and bands * rows <= spec.num_perm
    # P(candidate | J) = 1 - (1 - J^r)^b, at J = threshold
    assert candidate_probability(spec.threshold, bands, rows) == 1 - (1 - spec.threshold**rows) ** bands
    assert candidate_probability(spec.threshold, bands, rows) >= 1 - 1e-6
    assert candidate_probability(spec.threshold + 0.05, bands, rows) > candidate_probability(spec.threshold, bands,
                                                                                             rows)
    # rows per band as large as the budget allows: unrelated pairs rarely become candidates
    assert candidate_probability(0.3, bands, rows) < 0.25
    assert lsh_bands(spec.threshold, spec.max_miss, (bands * rows) - 1) != (bands, rows)


def test_banding_that_cannot_reach_the_miss_target_is_a_config_error():
    from llmops_cli.prep.neardup import lsh_bands

    with pytest.raises(ValueError, match="num_perm"):
        NearDupSpec(threshold=0.2, num_perm=16)
    assert lsh_bands(0.5, 1e-6, 512)[1] >= 2


def test_band_collisions_follow_the_s_curve():
    """MinHash values collide with probability J per permutation (what the S-curve assumes)."""
    from llmops_cli.prep.neardup import minhash_signatures

    rng = random.Random(3)
    vocab = [f"v{i}" for i in range(5000)]
    sims, agree = [], []
    for _ in range(150):
        base = [rng.choice(vocab) for _ in range(80)]
        other = _variant(rng, base, vocab)
        sims.append(_jaccard(set(shingles(" ".join(base), 3)), set(shingles(" ".join(other), 3))))
        sig = minhash_signatures([" ".join(base), " ".join(other)], 128, 3)
        agree.append(float((sig[0] == sig[1]).mean()))
    mean_sim, mean_agree = sum(sims) / len(sims), sum(agree) / len(agree)
    assert abs(mean_agree - mean_sim) < 0.02, (mean_agree, mean_sim)


def test_zero_leakage_across_splits_by_brute_force():
    threshold = NearDupSpec().threshold
    texts, above, below = _planted(7, threshold, bases=5000)
    assert above > 500 and below > 500  # both kinds are really planted
    rng = random.Random(11)
    names, weights = zip(*SPLIT_WEIGHTS, strict=True)
    split_of = rng.choices(names, weights, k=len(texts))
    index = NearDupIndex(threshold=threshold, num_perm=NearDupSpec().num_perm, ngram=3)
    for text in texts:
        index.add(text)
    removed = index.resolve(split_of)

    similar = _similar_pairs(texts, threshold)
    kept = set(range(len(texts))) - set(removed)
    surviving = [(a, b) for a, b in similar if a in kept and b in kept]
    leaks = [(a, b) for a, b in surviving if split_of[a] != split_of[b]]
    assert leaks == [] and surviving == []
    assert any(split_of[a] != split_of[b] for a, b in similar)  # the test had cross-split pairs to catch
    priority = {"test": 0, "validation": 1, "train": 2}
    for i, (j, sim) in removed.items():  # every removal is confirmed exactly, in favour of an eval row
        key = (min(i, j), max(i, j))
        assert key in similar and sim == pytest.approx(similar[key]) and j in kept
        assert priority[split_of[j]] <= priority[split_of[i]]
    assert len(removed) <= len(similar)


def test_index_memory_stays_under_1kb_per_row():
    """Growth while adding, and the peak of resolve, in bytes per row; a fifth of the rows collide in every
    band with an earlier row (copies), the worst case for the grouping."""
    import tracemalloc

    rng = random.Random(5)
    vocab = [f"m{i}" for i in range(3000)]
    index = NearDupIndex(threshold=0.8, num_perm=NearDupSpec().num_perm, ngram=3)
    assert index.bytes_per_row <= 1024
    rows, texts = 39_000, []
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i in range(rows):
            text = texts[rng.randrange(len(texts))] if i % 5 == 4 else " ".join(rng.choices(vocab, k=12))
            if len(texts) < 2000:
                texts.append(text)
            index.add(text)
        grown = (tracemalloc.get_traced_memory()[0] - start) / rows  # with the first block of band hashes
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        removed = index.resolve(["train", "validation", "test"] * (rows // 3))
        resolve_peak = (tracemalloc.get_traced_memory()[1] - before) / rows
    finally:
        tracemalloc.stop()
    assert len(removed) >= rows // 5 - 100
    assert grown <= 1024 and resolve_peak <= 1024, (grown, resolve_peak)


def test_template_heavy_rows_are_rejected_in_bulk_not_by_exact_checks():
    """Rows sharing a long boilerplate are all mutual LSH candidates (pairwise J ~0.4 < 0.8); the hashed
    n-gram Jaccard (never below the exact one) must reject them, leaving the exact set check for the few
    pairs that can reach the threshold: the planted near-copies."""
    rng = random.Random(13)
    vocab = [f"t{i}" for i in range(5000)]
    template = [rng.choice(vocab) for _ in range(30)]
    texts = [" ".join(template + [rng.choice(vocab) for _ in range(20)]) for _ in range(300)]
    texts += [t + " extra" for t in texts[:10]]  # near-copies at J ~0.98: must still be removed
    index = NearDupIndex(threshold=0.8, num_perm=NearDupSpec().num_perm, ngram=3)
    for text in texts:
        index.add(text)
    removed = index.resolve(["train"] * len(texts))
    assert sorted(removed) == list(range(300, 310))
    assert index.candidate_pairs > 5000  # the template really makes most pairs candidates
    assert index.exact_checks <= 20, (index.exact_checks, index.candidate_pairs)


def test_in_row_hash_collisions_fall_back_to_the_exact_check(monkeypatch):
    """With n-gram hashes squeezed to 12 bits, rows collide inside themselves: the hashed Jaccard then need not
    bound the exact one, so those rows are flagged for the exact check, and no near-duplicate survives."""
    import llmops_cli.prep.neardup as neardup

    real = neardup._grams
    monkeypatch.setattr(neardup, "_grams", lambda *a: real(*a) >> real(*a).dtype.type(52))
    threshold = NearDupSpec().threshold
    texts, _, _ = _planted(17, threshold, bases=300)
    index = NearDupIndex(threshold=threshold, num_perm=NearDupSpec().num_perm, ngram=3)
    for text in texts:
        index.add(text)
    removed = index.resolve(["train"] * len(texts))
    assert index._collide  # the squeezed hashes really collide inside rows
    kept = set(range(len(texts))) - set(removed)
    similar = _similar_pairs(texts, threshold)
    assert similar and [(a, b) for a, b in similar if a in kept and b in kept] == []
