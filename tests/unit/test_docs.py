"""Docs that match the code: the README's generated tables (settings, mdops's exit codes) are up to date."""

from pathlib import Path

from devcluster import settings_doc


def test_readme_generated_tables_are_up_to_date():
    readme = Path(settings_doc.README).read_text()
    assert settings_doc.render(readme) == readme, "README.md's generated tables are stale: `make generate`"
