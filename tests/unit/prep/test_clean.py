from llmops_cli.prep.clean import dedup_key, find_pii, normalize_text, redact_pii


def test_normalize_folds_unicode_and_strips_controls():
    assert normalize_text("Ｈｅｌｌｏ\u00a0 world\u200b \x07ok  ") == "Hello world ok"
    assert normalize_text("a\r\n\r\n\r\n\r\nb") == "a\n\nb"


def test_dedup_key_ignores_case_punctuation_and_spacing():
    assert dedup_key("Where is my  ORDER?") == dedup_key("where is my order")


def test_pii_detection_and_redaction():
    text = "mail jane.doe@example.com or call +1 415-555-0132 / (415) 555-0199; order #48213 for $12.50"
    assert find_pii(text) == {"email": 1, "phone": 2}
    assert redact_pii(text, ["email", "phone"]) == "mail [EMAIL] or call [PHONE] / [PHONE]; order #48213 for $12.50"
