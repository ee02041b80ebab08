"""The documentation site's sources and its checker (``make docs`` builds and checks the site).

The tutorials are stored without outputs (the build executes them); ``docs/check_site.py``
finds what it is meant to find on a small site written here; and when a built site is present
(``docs/_build/html``, after ``make docs``), it passes the check.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILT = DOCS / "_build" / "html"
NOTEBOOKS = sorted((DOCS / "tutorials").glob("*.ipynb"))


def load_checker():
    spec = importlib.util.spec_from_file_location("check_site", DOCS / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tutorials_are_in_the_toctree_and_stored_without_outputs():
    assert len(NOTEBOOKS) >= 3
    toctree = (DOCS / "tutorials" / "index.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"\n{path.stem}\n" in toctree, path.stem
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code, path.name
        for cell in code:
            assert cell["outputs"] == [] and cell["execution_count"] is None, (path.name, cell)


def _write(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>", encoding="utf-8")


def _fake_site(root: Path, names: list[str], modules: list[str]) -> None:
    """A site whose API reference covers ``names`` and ``modules``; all its links resolve."""
    links = "".join(f'<a href="generated/{n}.html#{n}">{n}</a>' for n in names)
    sections = " ".join(modules)
    _write(root / "api" / "index.html", f"<h1>{sections}</h1>{links}")
    for name in names:
        _write(root / "api" / "generated" / f"{name}.html", f'<dt id="{name}">{name}</dt>')
    (root / "_images").mkdir()
    (root / "_images" / "fig.png").write_bytes(b"png")
    _write(
        root / "index.html",
        '<a id="top" href="#top">top</a><a href="api/index.html">API</a>'
        '<img src="_images/fig.png"><a href="https://example.org/x">outside</a>',
    )


def test_check_site_passes_a_complete_site_and_names_each_problem(tmp_path, capsys):
    checker = load_checker()
    names = checker.public_names()
    assert "stglm.GLM" in names and "stglm.spatial.build_design" in names
    assert "stglm.generalized_lm._loss" in names and "stglm.get.coef_df" in names
    assert "stglm.spatial" not in names  # a submodule is covered by its own names
    modules = checker.public_modules()
    assert {"stglm.spatial", "stglm.get", "stglm.plotting", "stglm.generalized_lm"} <= set(modules)

    good = tmp_path / "good"
    _fake_site(good, names, modules)
    assert checker.main(["check_site", str(good)]) == 0

    bad = tmp_path / "bad"
    _fake_site(bad, names, modules[1:])
    (bad / "api" / "generated" / "stglm.fit_genes.html").unlink()
    _write(bad / "api" / "generated" / "stglm.GLM.html", "<dt>no anchor</dt>")
    _write(
        bad / "index.html",
        '<a href="missing.html">x</a><a href="api/index.html#nowhere">y</a>'
        '<img src="_images/gone.png"><script src="https://cdn.example.org/a.js"></script>',
    )
    capsys.readouterr()
    assert checker.main(["check_site", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "stglm.fit_genes: no page" in out
    assert "stglm.GLM: its page defines no anchor" in out
    assert "missing.html" in out and "no #nowhere there" in out and "gone.png" in out
    assert "loads from the network" in out
    assert f"{modules[0]}: api/index.html has no section naming it" in out
    # and the index's links to the two broken pages: nine problems, then the summary line
    assert "generated/stglm.fit_genes.html#stglm.fit_genes" in out
    assert out.count("check_site: ") == 10


@pytest.mark.skipif(not (BUILT / "index.html").is_file(), reason="site not built (make docs)")
def test_the_built_site_passes_its_check():
    assert load_checker().main(["check_site", str(BUILT)]) == 0


def test_changelog_cites_commits_of_this_history():
    import re
    import subprocess

    text = (DOCS / "changelog.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`([0-9a-f]{7})`", text))
    assert len(cited) > 20
    try:
        known = subprocess.run(
            ["git", "-C", str(ROOT), "rev-list", "--all", "--abbrev-commit", "--abbrev=7"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here")
    if subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
        capture_output=True, text=True,
    ).stdout.strip() == "true":  # fmt: skip
        pytest.skip("a shallow clone lacks the history")
    prefixes = {k[:7] for k in known}
    assert cited <= prefixes, sorted(cited - prefixes)
