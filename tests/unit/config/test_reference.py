from llmops_cli.config.reference import reference_rows


def test_reference_covers_nested_keys_with_descriptions():
    rows = {key: (kind, default, desc) for key, kind, default, desc in reference_rows()}
    assert rows["tune.lora.r"][1] == "16"
    assert rows["register.root"][1] == '"registry"'  # the YAML key, not the Python attribute
    assert "prep.sources[].path" in rows
    assert all(desc for _, _, desc in rows.values()), [k for k, v in rows.items() if not v[2]]
