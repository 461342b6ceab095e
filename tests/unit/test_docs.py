"""Docs that match the code: the README's settings tables are generated from the settings classes."""

from pathlib import Path

from devcluster import settings_doc


def test_readme_settings_tables_are_generated_from_the_settings_classes():
    readme = Path(settings_doc.README).read_text()
    assert settings_doc.render(readme) == readme, "README.md's settings tables are stale: run `make generate`"
