"""Build functions/query/dashboard.html: dashboard/index.html with the chart library inlined.

The dashboard is one static page that loads nothing from elsewhere (users' networks may block CDNs), so the
chart library, uPlot (MIT), is copied into it together with its license. The library comes from the npm
registry, pinned in dashboard/package-lock.json. The built page is committed, so neither users nor CI need npm:

- `make dashboard` (a change to the page only) reuses the library block of the committed page when
  dashboard/node_modules is absent;
- `make dashboard-library` (a new uPlot) runs `npm ci` in dashboard/ first, and the block comes from there.

    python scripts/build_dashboard.py [--output PATH] [--check]

`--check` builds into memory and exits 1 when the committed page differs (the template or the library
changed without a rebuild).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO_ROOT / "dashboard"
TEMPLATE = DASHBOARD_DIR / "index.html"
PACKAGE_LOCK = DASHBOARD_DIR / "package-lock.json"
LIBRARY_DIR = DASHBOARD_DIR / "node_modules" / "uplot"
OUTPUT = REPO_ROOT / "functions" / "query" / "dashboard.html"

DOCTYPE = "<!doctype html>\n"
NOTICE = "<!-- Built by scripts/build_dashboard.py from dashboard/index.html and uPlot; do not edit. -->\n"
MARKER = "<!-- vendor:uplot -->"
BEGIN = "<!-- vendor:uplot begin -->"
END = "<!-- vendor:uplot end -->"


class BuildError(Exception):
    """The template or the installed library is not what the build expects."""


def pinned_version(package_lock: Path = PACKAGE_LOCK) -> str:
    """The uPlot version dashboard/package-lock.json pins."""
    lock = json.loads(package_lock.read_text(encoding="utf-8"))
    return lock["packages"]["node_modules/uplot"]["version"]


def vendor_block(library_dir: Path = LIBRARY_DIR, expected_version: str | None = None) -> str:
    """uPlot's CSS and minified script as a <style> and a <script>, each headed by the library's license."""
    if not (library_dir / "package.json").is_file():
        raise BuildError(f"{library_dir} is missing: run `npm ci` in dashboard/ (or `make dashboard-library`)")
    version = json.loads((library_dir / "package.json").read_text(encoding="utf-8"))["version"]
    if expected_version is not None and version != expected_version:
        raise BuildError(f"installed uPlot {version}, package-lock.json pins {expected_version}: run `npm ci`")
    license_text = (library_dir / "LICENSE").read_text(encoding="utf-8").strip()
    script = (library_dir / "dist" / "uPlot.iife.min.js").read_text(encoding="utf-8").strip()
    css = (library_dir / "dist" / "uPlot.min.css").read_text(encoding="utf-8").strip()
    if "*/" in license_text:
        raise BuildError("the license text would end its comment early")
    for name, text, closing in (("uPlot.iife.min.js", script, "</script"), ("uPlot.min.css", css, "</style")):
        if closing in text.lower():
            raise BuildError(f"{name} contains {closing}>, which would end the inline element early")
    header = f"/*! uPlot v{version} | https://github.com/leeoniya/uPlot | MIT License\n\n{license_text}\n*/"
    return "\n".join(
        [
            BEGIN,
            f'<style id="uplot-css">{header}\n{css}</style>',
            f'<script id="uplot-lib">{header}\n{script}</script>',
            END,
        ]
    )


def render(template: str, block: str) -> str:
    """The page: the template with the vendor block in place of its marker, and a do-not-edit notice."""
    if template.count(MARKER) != 1:
        raise BuildError(f"the template must contain {MARKER} exactly once")
    if not template.startswith(DOCTYPE):
        raise BuildError(f"the template must start with {DOCTYPE.strip()}")
    page = template.replace(MARKER, block)
    return DOCTYPE + NOTICE + page.removeprefix(DOCTYPE)


def vendored_block(page: str) -> str:
    """The vendor block of a built page (BEGIN to END), so the template part can be checked without npm."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise BuildError("the page has no vendor block")
    return page[start : end + len(END)]


def library_block(library_dir: Path = LIBRARY_DIR, committed_page: Path = OUTPUT) -> tuple[str, str]:
    """The library block and where it came from: npm's copy when installed, else the committed page's."""
    if (library_dir / "package.json").is_file():
        return vendor_block(library_dir, pinned_version()), str(library_dir)
    if committed_page.is_file():
        return vendored_block(committed_page.read_text(encoding="utf-8")), f"the committed {committed_page.name}"
    raise BuildError(f"neither {library_dir} nor {committed_page} exists: run `make dashboard-library`")


def build(template: Path = TEMPLATE, library_dir: Path = LIBRARY_DIR) -> tuple[str, str]:
    """The page built from `template`, and where its library block came from."""
    block, source = library_block(library_dir)
    return render(template.read_text(encoding="utf-8"), block), source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --output is not what a build gives")
    args = parser.parse_args(argv)
    try:
        page, source = build()
    except BuildError as error:
        print(f"build_dashboard: {error}", file=sys.stderr)
        return 1
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != page:
            print(f"{args.output} is out of date: run `make dashboard`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(page, encoding="utf-8")
    print(f"wrote {args.output} ({len(page.encode()) // 1024} KiB; the library from {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
