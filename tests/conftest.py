"""The fixtures live in the harness package, tests/support/fixtures.py."""

pytest_plugins = ["tests.support.fixtures", "tests.support.details"]
