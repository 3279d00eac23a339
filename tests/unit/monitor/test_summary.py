import json

import pytest

from llmops_cli.errors import DataError
from llmops_cli.monitor.config import MonitorSection
from llmops_cli.monitor.summary import length_bucket, percentile, summarize
from tests.unit.monitor.logdata import PROMPTS, T0, request, train_file, write_log


def _cfg(tmp_path, **kw) -> MonitorSection:
    base = {"request_log": str(tmp_path / "requests.jsonl"), "feedback_log": str(tmp_path / "feedback.jsonl"),
            "output": str(tmp_path / "m.json"), "drift": {"enabled": False}}
    base.update(kw)
    return MonitorSection(**base)


def test_percentile_matches_linear_interpolation():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([], 0.5) is None


def test_length_buckets_are_powers_of_two():
    assert [length_bucket(n) for n in (0, 1, 2, 3, 4, 7, 8, 100)] == ["0", "1", "2-3", "2-3", "4-7", "4-7", "8-15",
                                                                    "64-127"]


def test_summary_counts_errors_skips_corrupt_lines_and_flags_breaches(tmp_path):
    lines = [json.dumps({"status": 200, "latency_ms": 10 * (i + 1), "model": "m:1", "prompt_tokens": 5,
                         "completion_tokens": 2}) for i in range(9)]
    lines += [json.dumps({"status": 500, "latency_ms": 1000, "model": "m:2"}), '{"status": 200, "late', "garbage",
              "[1, 2]", json.dumps({"status": "teapot", "latency_ms": 3})]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "requests.jsonl").open("ab").write(b"\xff\xfe\x00binary\n")
    result = summarize(_cfg(tmp_path, max_error_rate=0.05))
    assert result.overall["requests"] == 10
    assert result.overall["errors"] == 1
    assert result.corrupt_lines == 5
    assert result.per_model["m:1"]["tokens_in"] == 45
    assert result.breaches == ["error_rate 0.100 > 0.05"]
    assert json.loads((tmp_path / "m.json").read_text())["overall"]["requests"] == 10


def test_rotated_logs_are_read_oldest_first_and_split_into_windows(tmp_path):
    live = tmp_path / "requests.jsonl"
    # <log>.2 is the oldest hour, <log>.1 the next, the live file the latest.
    write_log(tmp_path / "requests.jsonl.2", [request(i, ts=T0 + i, latency_ms=10) for i in range(10)])
    write_log(tmp_path / "requests.jsonl.1", [request(i, ts=T0 + 3600 + i, latency_ms=20) for i in range(10)])
    write_log(live, [request(i, ts=T0 + 7200 + i, latency_ms=30, status=500 if i < 5 else 200) for i in range(10)])
    write_log(tmp_path / "requests.jsonl.bak", [request(0)])  # not a rotation: ignored
    result = summarize(_cfg(tmp_path, window_s=3600))
    assert [p.rsplit("/", 1)[-1] for p in result.files] == ["requests.jsonl.2", "requests.jsonl.1", "requests.jsonl"]
    assert result.overall["requests"] == 30
    windows = result.windows
    assert [w["requests"] for w in windows] == [10, 10, 10]
    assert [w["latency_p50_ms"] for w in windows] == [10, 20, 30]
    assert [w["error_rate"] for w in windows] == [0, 0, 0.5]
    assert windows[0]["request_rate_per_s"] == pytest.approx(10 / 3600)
    assert result.per_model_windows["m:1"][2]["errors"] == 5
    # since_s keeps only the last hour (relative to `now`)
    recent = summarize(_cfg(tmp_path, since_s=1800), now=T0 + 7200 + 60)
    assert recent.overall["requests"] == 10


def test_health_per_model_latency_ttft_tokens_and_response_lengths(tmp_path):
    recs = [request(i, "a:1", latency_ms=float(i + 1), ttft_ms=float(i), completion_tokens=i % 8) for i in range(100)]
    recs += [request(100 + i, "a:2", latency_ms=500.0) for i in range(20)]
    write_log(tmp_path / "requests.jsonl", recs)
    result = summarize(_cfg(tmp_path))
    a1 = result.per_model["a:1"]
    assert a1["latency_p99_ms"] == pytest.approx(99.01)
    assert a1["ttft_p50_ms"] == pytest.approx(49.5)
    assert result.per_model["a:2"]["ttft_p50_ms"] is None  # non-streaming: no TTFT
    assert a1["tokens_out"] == sum(i % 8 for i in range(100))
    assert a1["response_length_histogram"] == {"0": 13, "1": 13, "2-3": 26, "4-7": 48}
    assert a1["empty_rate"] == pytest.approx(13 / 100)  # completion_tokens == 0
    assert a1["request_rate_per_s"] == pytest.approx(100 / 99)


def test_quality_flags_refusals_pii_blocklist_truncation(tmp_path):
    recs = [
        request(0, response="I'm sorry, I cannot help with that.", prompt="hi"),
        request(1, response="Write to jane.doe@example.com", prompt="hi"),
        request(2, response="Your [EMAIL] was updated", prompt="hi"),  # redacted by serve: still a leak
        request(3, response="Buy CompetitorCorp instead", prompt="hi"),
        request(4, response="billing", finish_reason="length", prompt="hi"),
        request(5, response="", completion_tokens=0, prompt="hi"),
        request(6, response="billing", prompt="hi"),
        request(7),  # content logging off: not counted in content rates
    ]
    write_log(tmp_path / "requests.jsonl", recs)
    result = summarize(_cfg(tmp_path, quality={"blocklist": ["competitorcorp"]}))
    s = result.per_model["m:1"]
    assert s["flags"] == {"blocklist": 1, "empty": 1, "pii": 2, "refusal": 1, "truncated": 1}
    assert s["refusal_rate"] == pytest.approx(1 / 7)
    assert s["pii_rate"] == pytest.approx(2 / 7)
    assert s["truncated_rate"] == pytest.approx(1 / 8)
    assert s["flagged_rate"] == pytest.approx(6 / 8)
    assert sorted(i["response_id"] for i in result.interactions) == [f"chatcmpl-req-{i}" for i in range(6)]


def test_feedback_joins_on_response_id_latest_rating_wins(tmp_path):
    write_log(tmp_path / "requests.jsonl", [request(i, "m:1" if i < 5 else "m:2", prompt=f"p{i}", response="x")
                                            for i in range(10)])
    feedback = [{"response_id": "chatcmpl-req-1", "rating": 5, "model": "m:1"},
                {"response_id": "chatcmpl-req-1", "rating": 2, "model": "m:1", "correction": "billing"},
                {"response_id": "chatcmpl-req-7", "rating": 1, "model": "wrong-in-feedback"},
                {"response_id": "chatcmpl-req-8", "rating": 9}, {"rating": 3}]
    write_log(tmp_path / "feedback.jsonl", feedback, tail="not json\n")
    result = summarize(_cfg(tmp_path))
    assert result.per_model["m:1"]["mean_rating"] == 2
    assert result.per_model["m:2"]["feedback_count"] == 1  # the log says which version answered
    assert result.overall["low_rating_rate"] == 1.0
    assert result.feedback["ratings"]["all"] == {"1": 1, "2": 1}
    assert any("3 corrupt feedback" in w for w in result.warnings)
    low = {i["response_id"]: i for i in result.interactions}
    assert low["chatcmpl-req-1"]["correction"] == "billing"


def test_drift_per_model_version_against_train_split(tmp_path):
    train = train_file(tmp_path / "train.jsonl")
    same = [request(i, "old:1", prompt=f"{PROMPTS[i % 5]} (ref {1000 + i})") for i in range(60)]
    shifted = [request(100 + i, "new:2", prompt="Wie kann ich mein Abonnement sofort kündigen, es ist viel zu teuer "
                       "geworden und niemand antwortet auf meine E-Mails") for i in range(60)]
    few = [request(200 + i, "tiny:3", prompt="hello") for i in range(3)]
    write_log(tmp_path / "requests.jsonl", same + shifted + few)
    cfg = _cfg(tmp_path, drift={"train_data": str(train), "min_samples": 50})
    result = summarize(cfg)
    old, new = result.per_model["old:1"], result.per_model["new:2"]
    assert old["drift_length_psi"] < 0.2 and old["drift_vocab_js"] < 0.3
    assert new["drift_length_psi"] > 1 and new["drift_vocab_js"] > 0.8
    assert result.per_model["tiny:3"]["drift_length_psi"] is None
    assert result.drift["per_model"]["tiny:3"]["skipped"] == "fewer than 50"
    assert [b for b in result.breaches if "drift" in b] == [b for b in result.breaches if b.startswith("new:2")]
    assert any(b.startswith("new:2: drift_length_psi") for b in result.breaches)


def test_missing_training_data_skips_drift_with_a_warning(tmp_path):
    write_log(tmp_path / "requests.jsonl", [request(0, prompt="x")])
    result = summarize(_cfg(tmp_path, drift={"train_data": str(tmp_path / "none.jsonl")}))
    assert any("drift skipped" in w for w in result.warnings)
    assert result.breaches == []


def test_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no log"):
        summarize(MonitorSection(request_log=str(tmp_path / "none.jsonl")))


def test_drift_reference_hash_is_checked_against_the_prep_report(tmp_path):
    from llmops_cli.utils import sha256_file

    train = train_file(tmp_path / "train.jsonl")
    write_log(tmp_path / "requests.jsonl", [request(i, prompt=PROMPTS[i % 5]) for i in range(3)])
    report = tmp_path / "prep.json"
    report.write_text(json.dumps({"hashes": {"train": sha256_file(train)}}))
    cfg = _cfg(tmp_path, drift={"train_data": str(train), "prep_report": str(report)})
    assert summarize(cfg).drift["reference_matches_prep_report"] is True
    report.write_text(json.dumps({"hashes": {"train": "0" * 64}}))
    result = summarize(cfg)
    assert result.drift["reference_matches_prep_report"] is False
    assert any("re-run `llmops prep`" in w for w in result.warnings)


def test_feedback_posts_and_admin_calls_are_not_requests(tmp_path):
    """76 'requests' for 56 chats + 20 feedback posts skewed latency and error rate."""
    recs = [request(i, "a:1", latency_ms=40.0) for i in range(56)]
    recs += [request(100 + i, "a:1", latency_ms=2.0, path="/v1/feedback", prompt_tokens=0, completion_tokens=None)
             for i in range(20)]
    recs += [request(200, "a:1", status=500, latency_ms=9000.0, path="/admin/reload"),
             request(201, "a:1", latency_ms=1.0, path="/ready")]
    write_log(tmp_path / "requests.jsonl", recs)
    stats = summarize(_cfg(tmp_path)).per_model["a:1"]
    assert stats["requests"] == 56 and stats["error_rate"] == 0
    assert stats["latency_p50_ms"] == pytest.approx(40.0)
