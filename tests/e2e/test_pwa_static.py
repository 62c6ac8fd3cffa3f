"""Checks of the PWA's files that need no browser and no servers."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def test_service_worker_precaches_every_shell_file() -> None:
    """A module missing from the precache list would break the app offline."""
    sw = (WEB / "sw.js").read_text()
    listed = set(re.findall(r"'(/[^']*)'", sw.split("const SHELL = [", 1)[1].split("];", 1)[0]))
    on_disk = {
        "/" + str(p.relative_to(WEB))
        for pattern in ("js/**/*.js", "i18n/*.js", "css/*.css")
        for p in WEB.glob(pattern)
    }
    assert on_disk - listed == set(), "add these to SHELL in web/sw.js"
    for url in listed - {"/"}:
        assert (WEB / url.lstrip("/")).is_file(), url


def test_spanish_and_english_have_the_same_strings() -> None:
    def keys(lang: str) -> set[str]:
        text = (WEB / "i18n" / f"{lang}.js").read_text()
        return set(re.findall(r"^  '([a-zA-Z0-9_.]+)':", text, re.MULTILINE))

    es, en = keys("es"), keys("en")
    assert len(es) > 100
    assert es ^ en == set()
    used = set()
    for path in WEB.glob("js/**/*.js"):
        used |= set(re.findall(r"\bt\('([a-zA-Z0-9_.]+)'", path.read_text()))
    used |= set(re.findall(r'data-i18n(?:-aria)?="([^"]+)"', (WEB / "index.html").read_text()))
    # `order.${status}` and `cat.${code}` are built at run time.
    assert used - es == set(), "strings used but not translated"


def test_manifest_names_icons_that_exist() -> None:
    manifest = json.loads((WEB / "manifest.webmanifest").read_text())
    assert manifest["display"] == "standalone" and manifest["start_url"].startswith("/")
    sizes = {i["sizes"] for i in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes
    assert any(i.get("purpose") == "maskable" for i in manifest["icons"])
    for icon in manifest["icons"]:
        assert (WEB / icon["src"].lstrip("/")).is_file(), icon["src"]


def test_no_inline_script_or_html_injection_in_views() -> None:
    """The CSP forbids inline script; views build DOM, never parse API text as HTML."""
    index = (WEB / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", index)
    for path in WEB.glob("js/**/*.js"):
        text = path.read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, path
        assert "eval(" not in text and "new Function" not in text, path


def test_file_names_the_file_system_refuses_are_missing_files(tmp_path: Path) -> None:
    """Too long, a symlink loop, NUL, outside the root: None (a 404), never an exception."""
    from api.web import MAX_PATH_CHARS, _Assets

    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("export {};")
    (tmp_path / "js" / "loop").symlink_to("loop")
    assets = _Assets(tmp_path)
    assert assets.resolve("/js/app.js") == (tmp_path / "js" / "app.js").resolve()
    for name in (
        "/js/" + "a" * 300,
        "/js/" + "a" * (MAX_PATH_CHARS - 3),
        "/js/" + "\u00e9" * 200,  # 200 characters, 400 bytes: over the file system's 255
        "/js/loop",
        "/js/loop/app.js",
        "/js/\x00",
        "/js/../../etc/passwd",
        "/js/..\\..\\x",
    ):
        assert assets.resolve(name) is None, name
