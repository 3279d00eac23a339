"""Regenerate the config reference table in README.md from the schema."""

import re
import subprocess
import sys
from pathlib import Path

readme = Path(__file__).resolve().parents[1] / "README.md"
table = subprocess.run([sys.executable, "-m", "llmops_cli", "config", "reference", "--markdown"],
                       capture_output=True, text=True, check=True).stdout
text = readme.read_text(encoding="utf-8")
text = re.sub(r"<!-- config-reference:start -->\n.*<!-- config-reference:end -->",
              lambda _: f"<!-- config-reference:start -->\n{table}<!-- config-reference:end -->", text, flags=re.S)
readme.write_text(text, encoding="utf-8")
