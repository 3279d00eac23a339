import re
import subprocess
import sys

from tests.conftest import ROOT


def test_readme_config_reference_is_current():
    """README's reference table is generated from the schema; regenerate it when a field changes."""
    expected = subprocess.run([sys.executable, "-m", "llmops_cli", "config", "reference", "--markdown"],
                              capture_output=True, text=True, check=True).stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- config-reference:start -->\n(.*)<!-- config-reference:end -->", readme, re.S)
    assert block and block.group(1) == expected, "run: python scripts/update_readme.py"
