import math
from collections import Counter

import pytest

from llmops_cli.errors import DataError
from llmops_cli.monitor.drift import TextProfile, compare, js_divergence, load_reference, psi, tokenize
from tests.unit.monitor.logdata import write_log


def test_tokenize_words_and_punctuation_lowercased():
    assert tokenize("Hello, World! It's") == ["hello", ",", "world", "!", "it", "'", "s"]


def test_psi_zero_for_same_distribution_and_large_for_a_shift():
    ref = [i % 20 for i in range(1000)]
    assert psi(ref, list(ref)) == pytest.approx(0.0)
    assert psi(ref, [v + 10 for v in ref]) > 1.0
    slight = psi(ref, [v + 1 for v in ref])
    assert 0 < slight < psi(ref, [v + 5 for v in ref])


def test_psi_matches_the_formula_on_two_bins():
    # reference deciles of [0]*500 + [1]*500 give one edge at 0 -> bins (-inf,0] and (0,inf)
    ref = [0] * 500 + [1] * 500
    cur = [0] * 200 + [1] * 800
    expected = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected)


def test_js_divergence_bounds_and_known_value():
    p = Counter({"a": 1, "b": 1})
    assert js_divergence(p, Counter({"a": 5, "b": 5})) == pytest.approx(0.0)
    assert js_divergence(p, Counter({"c": 1})) == pytest.approx(1.0)
    # p=(1,0), q=(.5,.5): m=(.75,.25): JS = .5*log2(1/.75) + .5*(.5*log2(.5/.75)+.5*log2(.5/.25))
    expected = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(2))
    assert js_divergence(Counter({"a": 1}), Counter({"a": 1, "b": 1})) == pytest.approx(expected)
    assert js_divergence(Counter(), Counter()) == 0.0


def test_compare_reports_oov_and_bigram_shift():
    ref, cur = TextProfile(), TextProfile()
    for _ in range(10):
        ref.add("my order is late")
        cur.add("late is order my")  # same words, different order: unigrams equal, bigrams not
    scores = compare(ref, cur)
    assert scores["drift_vocab_js"] == pytest.approx(0.0)
    assert scores["drift_bigram_js"] == pytest.approx(1.0)
    assert scores["drift_oov_rate"] == 0.0


def test_load_reference_reads_chat_rows_and_skips_bad_lines(tmp_path):
    path = write_log(tmp_path / "train.jsonl", [
        {"prompt": "plain prompt"},
        {"prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "a"}, {"role": "user", "content": "last question"}]},
        {"prompt": 3}, {"other": "x"},
    ], tail="not json\n")
    profile = load_reference(path)
    assert profile.lengths == [2, 2]
    assert profile.unigrams["last"] == 1 and profile.unigrams["first"] == 0
    with pytest.raises(DataError, match="no prompts"):
        load_reference(path, prompt_field="nope")
    with pytest.raises(DataError, match="no training data"):
        load_reference(tmp_path / "missing.jsonl")
