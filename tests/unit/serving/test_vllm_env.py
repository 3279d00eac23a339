"""vLLM's environment: root causes from its log, dtype resolution, where its interpreter is."""

import json
import sys

from llmops_cli.serving.vllm_env import resolve_dtype, root_cause, vllm_python

LOG = """\
(APIServer pid=1) INFO 11-24 08:04:59 [api_utils.py:347] version 0.32.0
(APIServer pid=1) WARNING 11-24 08:04:59 [system_utils.py:255] Found ulimit of 20000 and failed to automatically \
increase with error current limit exceeds maximum limit. This can cause fd limit errors like `OSError: [Errno 24] \
Too many open files`. Consider increasing with ulimit -n
(EngineCore pid=2) ERROR 11-24 08:05:30 [core.py:708] EngineCore failed to start.
(EngineCore pid=2) ERROR 11-24 08:05:30 [core.py:708] ValueError: Available memory 1.0 GiB is less than desired
/usr/lib/python3.11/warnings.py:1: DeprecationWarning: RuntimeError: not this one
(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above.
(APIServer pid=1) INFO shutdown
"""


def test_root_cause_is_the_error_line_not_a_warning_or_a_wrapper():
    # vLLM's last word points "above": the cause it points at is what the user needs.
    assert root_cause(LOG) == "ValueError: Available memory 1.0 GiB is less than desired"
    wrapper_only = "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above.\n"
    assert root_cause(wrapper_only) == "RuntimeError: Engine core initialization failed. See root cause above."
    assert root_cause("INFO all good\n") is None


def test_pydantic_validation_errors_are_found():
    text = "    pydantic_core._pydantic_core.ValidationError: 1 validation error for VllmConfig\n"
    assert root_cause(text) == "pydantic_core._pydantic_core.ValidationError: 1 validation error for VllmConfig"


def test_dtype_resolution(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert resolve_dtype("float16", "float32", str(tmp_path)) == "float16"
    assert resolve_dtype("auto", "float32", str(tmp_path)) == "float32"
    assert resolve_dtype("auto", "auto", str(tmp_path)) == "bfloat16"
    assert resolve_dtype("auto", "auto", "org/hub-model") == "auto"


def test_vllm_python_prefers_config_then_project_venv(tmp_path):
    assert vllm_python("/x/python", tmp_path) == "/x/python"
    assert vllm_python(None, tmp_path) == sys.executable
    venv = tmp_path / ".venv-vllm/bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    assert vllm_python(None, tmp_path) == str(venv / "python")
