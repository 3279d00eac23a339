"""The one rule for default sampling parameters (serving/sampling.py)."""

import json

from llmops_cli.serving.sampling import SamplingDefaults, sampling_defaults


def _model(tmp_path, name, config=None):
    path = tmp_path / name
    path.mkdir()
    if config is not None:
        (path / "generation_config.json").write_text(json.dumps(config))
    return str(path)


def test_do_sample_false_means_greedy(tmp_path):
    defaults = sampling_defaults(_model(tmp_path, "m", {"do_sample": False, "temperature": 0.7}))
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (0.0, 1.0, None)


def test_sampling_values_are_taken_as_written(tmp_path):
    defaults = sampling_defaults(_model(tmp_path, "m", {"do_sample": True, "temperature": 0.6, "top_p": 0.9,
                                                        "top_k": 20}))
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (0.6, 0.9, 20)
    # transformers' own top_k=50 is not implied when the file does not set it
    assert sampling_defaults(_model(tmp_path, "n", {"do_sample": True})).top_k is None


def test_the_adapter_directory_comes_before_the_base(tmp_path):
    adapter = _model(tmp_path, "adapter")  # no generation_config.json of its own
    base = _model(tmp_path, "base", {"do_sample": False})
    assert sampling_defaults(adapter, base).temperature == 0.0
    own = _model(tmp_path, "own", {"temperature": 0.3, "do_sample": True})
    assert sampling_defaults(own, base).temperature == 0.3


def test_without_a_generation_config_openai_defaults_apply(tmp_path):
    defaults = sampling_defaults(_model(tmp_path, "bare"), "no-such-org/no-such-model", None)
    assert defaults == SamplingDefaults() and defaults.temperature == 1.0 and defaults.source == "OpenAI defaults"


def test_explicit_request_values_win():
    rule = SamplingDefaults(temperature=0.0, top_p=1.0, top_k=None, source="x")
    assert rule.apply({"temperature": 0.8}) == {"temperature": 0.8, "top_p": 1.0}
    assert rule.apply({}) == {"temperature": 0.0, "top_p": 1.0}
    assert SamplingDefaults(top_k=5).apply({"top_k": 2})["top_k"] == 2
    assert SamplingDefaults(top_k=5).apply({})["top_k"] == 5
