import pytest

from llmops_cli.prep.clean import dedup_key, find_pii, iban_ok, luhn_ok, normalize_text, redact_pii


def test_normalize_folds_unicode_and_strips_controls():
    assert normalize_text("Ｈｅｌｌｏ\u00a0 world\u200b \x07ok  ") == "Hello world ok"
    assert normalize_text("a\r\n\r\n\r\n\r\nb") == "a\n\nb"
    assert normalize_text("  line one  \n\t line two\t") == "line one\nline two"


def test_dedup_key_ignores_case_punctuation_and_spacing():
    assert dedup_key("Where is my  ORDER?") == dedup_key("where is my order")
    assert dedup_key("Où est ma COMMANDE ?") == dedup_key("où est ma commande")
    assert dedup_key("snake_case stays") != dedup_key("snake case stays")


def test_pii_detection_and_redaction():
    text = "mail jane.doe@example.com or call +1 415-555-0132 / (415) 555-0199; order #48213 for $12.50"
    assert find_pii(text) == {"email": 1, "phone": 2}
    assert redact_pii(text, ["email", "phone"]) == "mail [EMAIL] or call [PHONE] / [PHONE]; order #48213 for $12.50"


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize("text,kind", [
    ("pay with 4111 1111 1111 1111 please", "credit_card"),
    ("amex 3782-822463-10005 ok", "credit_card"),
    ("server 192.168.10.4 is down", "ip"),
    ("v6 at 2001:db8:85a3::8a2e:370:7334 fails", "ip"),
    ("iban DE89 3704 0044 0532 0130 00 thanks", "iban"),
    ("key AKIAIOSFODNN7EXAMPLE leaked", "aws_key"),
    ("token ghp_" + "a1B2" * 9 + " in the repo", "github_token"),
    ("OPENAI sk-proj-abcdefghijklmnopqrstuvwxyz012345 here", "openai_key"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "private_key"),
])
def test_each_pii_type_is_found_and_redacted(text, kind):
    assert find_pii(text) == {kind: 1}
    redacted = redact_pii(text, [kind])
    assert find_pii(redacted) == {}
    assert "[" in redacted


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn",    # bad checksum
    "version 1.2.3.4567 and 999.1.1.1",         # not IPs
    "iban GB82 WEST 1234 5698 7654 33",         # bad mod-97
    "order 123456 shipped, sku ab-12",         # plain numbers
    "ask for sk-short or ghp_tooShort",          # not tokens
])
def test_lookalikes_are_not_pii(text):
    assert find_pii(text) == {}


def test_card_number_counts_once_not_as_phone_too():
    assert find_pii("card 4111-1111-1111-1111, call 020 7946 0958") == {"credit_card": 1, "phone": 1}
