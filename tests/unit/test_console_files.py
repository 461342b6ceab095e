"""The console's files: the vendored libraries are exactly what package-lock.json pins (copied by
``make console``, never committed), and the page's own modules import nothing from elsewhere."""

from __future__ import annotations

import json
import re

from api.routes.console import CONSOLE_DIR
from devcluster.controlplane import REPO

PACKAGE = json.loads((REPO / "package.json").read_text())
LOCK = json.loads((REPO / "package-lock.json").read_text())


def test_the_vendored_files_are_the_locked_packages_files():
    for target, source in PACKAGE["mdops"]["vendor"].items():
        name = source.split("/")[0]
        installed = REPO / "node_modules" / name
        assert installed.is_dir(), f"node_modules/{name} is missing: run `make console`"
        locked = LOCK["packages"][f"node_modules/{name}"]["version"]
        assert json.loads((installed / "package.json").read_text())["version"] == locked, (
            f"node_modules/{name} is not the version package-lock.json pins: run `make console`"
        )
        assert PACKAGE["dependencies"][name] == locked  # pinned exactly in package.json too
        vendored = CONSOLE_DIR / "vendor" / target
        assert vendored.read_bytes() == (REPO / "node_modules" / source).read_bytes(), (
            f"{vendored} differs from node_modules/{source}: run `make console`"
        )


def test_the_page_loads_only_its_own_files():
    html = (CONSOLE_DIR / "index.html").read_text()
    assert "<script>" not in html and "style=" not in html  # nothing inline: the CSP refuses it
    for reference in re.findall(r'(?:src|href)="([^"#][^"]*)"', html):  # not the #/view links
        assert not re.match(r"(https?:)?//", reference), reference
        assert (CONSOLE_DIR / reference).exists(), reference
    for module in (CONSOLE_DIR / "js").glob("*.js"):
        for imported in re.findall(r'^import .* from "([^"]+)";$', module.read_text(), re.MULTILINE):
            assert imported.startswith("./") or imported.startswith("../vendor/"), (module.name, imported)
            assert (module.parent / imported).resolve().exists(), (module.name, imported)


def test_every_module_the_page_imports_is_preloaded():
    """index.html names each module main.js reaches (the browser fetches them at once), no more, no less."""
    reached, todo = set(), [CONSOLE_DIR / "js" / "main.js"]
    while todo:
        module = todo.pop()
        text = module.read_text()  # the page's modules use double quotes, the vendored ones single
        for imported in re.findall(r"""^(?:import|export) .* from ["']([^"']+)["'];?$""", text, re.MULTILINE):
            path = (module.parent / imported).resolve()
            if path not in reached:
                reached.add(path)
                todo.append(path)
    html = (CONSOLE_DIR / "index.html").read_text()
    preloaded = {
        (CONSOLE_DIR / href).resolve() for href in re.findall(r'rel="modulepreload" href="([^"]+)"', html)
    }
    assert preloaded == reached
