from tests.registry_fixtures import adapter_project  # noqa: F401
