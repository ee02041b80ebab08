"""Check a built documentation site (``make docs`` runs this after Sphinx).

1. The API reference covers every public name: each name in ``stglm.__all__`` and in the
   ``__all__`` of every public submodule (those ``stglm.__all__`` names — ``spatial``, ``get``,
   ``plotting``, ``datasets``, ... — and ``stglm.generalized_lm``) has its page
   ``api/generated/<full name>.html``, linked from ``api/index.html``, that defines the anchor
   ``<full name>`` (a submodule is covered by its own names and a section of the index).
2. No internal link or image is broken: every ``href``/``src`` that points into the site
   names an existing file, and its ``#fragment``, if any, an ``id`` (or ``name``) in that file.
3. The site works offline: no image, script or stylesheet is loaded from the network.

Standard library only; no network. Usage: ``python docs/check_site.py [docs/_build/html]``;
exit status 1 with one line per problem.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Public modules not named in ``stglm.__all__`` whose ``__all__`` the reference must cover.
EXTRA_MODULES = ("stglm.generalized_lm",)
#: (tag, attribute) pairs that load a resource the page needs to display.
RESOURCES = {("img", "src"), ("script", "src"), ("link", "href"), ("source", "src")}
REMOTE = ("http:", "https:", "//")


class _Page(HTMLParser):
    """The ids of one HTML page and the URLs it references, with their tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name"):
            if values.get(key):
                self.ids.add(str(values[key]))
        for attr in ("href", "src"):
            url = values.get(attr)
            if url is not None and not (tag == "link" and values.get("rel") == "canonical"):
                self.refs.append((tag, attr, url))


def parse_site(root: Path) -> dict[Path, _Page]:
    """Every HTML page under ``root``, parsed."""
    pages = {}
    for path in sorted(root.rglob("*.html")):
        if path.relative_to(root).parts[0] in ("_static", "_sources"):
            continue  # the theme's templates and the sources, not pages
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = page
    return pages


def public_modules() -> list[str]:
    """The submodules named in ``stglm.__all__``, and ``EXTRA_MODULES``."""
    import stglm

    named = [f"stglm.{n}" for n in stglm.__all__ if inspect.ismodule(getattr(stglm, n))]
    return named + [m for m in EXTRA_MODULES if m not in named]


def public_names() -> list[str]:
    """Fully qualified public names that need a page of their own."""
    import stglm

    modules = public_modules()
    names = [f"stglm.{n}" for n in stglm.__all__ if f"stglm.{n}" not in modules]
    for module_name in modules:
        module = importlib.import_module(module_name)
        names += [f"{module_name}.{name}" for name in module.__all__]
    return names


def check_api(root: Path, pages: dict[Path, _Page]) -> list[str]:
    """Problems with the API reference's coverage of the public names."""
    problems = []
    index_path = (root / "api" / "index.html").resolve()
    if index_path not in pages:
        return [f"{index_path}: the API reference's index page is missing"]
    index = pages[index_path]
    linked = {urlsplit(url).path for _, attr, url in index.refs if attr == "href"}
    index_text = index_path.read_text(encoding="utf-8")
    for name in public_names():
        page_path = (root / "api" / "generated" / f"{name}.html").resolve()
        if page_path not in pages:
            problems.append(f"{name}: no page api/generated/{name}.html")
            continue
        if f"generated/{name}.html" not in linked:
            problems.append(f"{name}: api/index.html does not link to its page")
        if name not in pages[page_path].ids:
            problems.append(f"{name}: its page defines no anchor #{name}")
    for module in public_modules():  # named on its own, not only as a prefix of its names
        if not re.search(re.escape(module) + r"(?![\w.])", index_text):
            problems.append(f"{module}: api/index.html has no section naming it")
    return problems


def check_links(root: Path, pages: dict[Path, _Page]) -> list[str]:
    """Broken internal links and images, and resources loaded from the network."""
    problems = []
    for path, page in pages.items():
        where = path.relative_to(root.resolve())
        for tag, attr, url in page.refs:
            if url.startswith(REMOTE):
                if (tag, attr) in RESOURCES:
                    problems.append(f"{where}: <{tag} {attr}={url!r}> loads from the network")
                continue
            parts = urlsplit(url)
            if parts.scheme in ("mailto", "data", "javascript") or parts.scheme:
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{where}: <{tag} {attr}={url!r}>: {target} does not exist")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if fragment not in ids:
                    problems.append(f"{where}: <{tag} {attr}={url!r}>: no #{fragment} there")
    return problems


def main(argv: list[str]) -> int:
    """Check the site at ``argv[1]`` (default ``docs/_build/html``); print the problems."""
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "_build" / "html"
    if not (root / "index.html").is_file():
        print(f"check_site: no built site at {root} (run make docs)")
        return 1
    pages = parse_site(root)
    problems = check_api(root, pages) + check_links(root, pages)
    for problem in problems:
        print(f"check_site: {problem}")
    n_refs = sum(len(p.refs) for p in pages.values())
    print(
        f"check_site: {len(pages)} pages, {n_refs} links and images, "
        f"{len(public_names())} public names: {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
