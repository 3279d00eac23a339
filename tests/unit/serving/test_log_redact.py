"""The request log redacts every secret prep knows by default (#14 added JWTs, Slack tokens, AWS secrets)."""

from llmops_cli.config.loader import load_config
from llmops_cli.prep.clean import SECRET_KINDS


def test_default_log_redaction_covers_every_secret_kind():
    assert set(SECRET_KINDS) <= set(load_config(None).serve.log_redact)
