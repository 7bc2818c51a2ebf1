"""The committed functions/query/dashboard.html is the build of dashboard/index.html, and GET /dashboard serves it.

The library part of the page comes from npm; these tests need no npm: they rebuild the page from the current
template and the library block already in the committed page, as `make dashboard` does without node_modules.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from types import ModuleType

import pytest

from support import REPO_ROOT, LambdaContext, get_event, load_function


def load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", REPO_ROOT / "scripts" / "build_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build_script()


def test_committed_page_is_built_from_the_current_template() -> None:
    page = build.OUTPUT.read_text(encoding="utf-8")
    rebuilt = build.render(build.TEMPLATE.read_text(encoding="utf-8"), build.vendored_block(page))
    assert page == rebuilt, "functions/query/dashboard.html is out of date: run `make dashboard`"


def test_committed_page_carries_the_pinned_library_with_its_license() -> None:
    block = build.vendored_block(build.OUTPUT.read_text(encoding="utf-8"))
    header = f"/*! uPlot v{build.pinned_version()} | https://github.com/leeoniya/uPlot | MIT License"
    assert block.count(header) == 2  # on the script and on the style
    assert block.count("Permission is hereby granted, free of charge") == 2
    assert "var uPlot=" in block


def test_committed_page_loads_nothing_from_elsewhere() -> None:
    page = build.OUTPUT.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    assert re.findall(r"<link\b[^>]*>", page) == ['<link rel="icon" href="data:,">']
    assert "@import" not in page
    assert "localStorage" not in build.TEMPLATE.read_text(encoding="utf-8")


def test_render_refuses_a_template_without_the_marker() -> None:
    with pytest.raises(build.BuildError):
        build.render("<!doctype html>\n<html></html>", "<!-- vendor:uplot begin -->x<!-- vendor:uplot end -->")


def test_dashboard_route_serves_the_page_with_a_policy_admitting_exactly_its_inline_code() -> None:
    query = load_function("query")  # GET /dashboard touches no database
    response = query.lambda_handler(get_event("/dashboard", headers={"x-api-key": ""}), LambdaContext())
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()} | (response.get("headers") or {})
    page = build.OUTPUT.read_text(encoding="utf-8")
    assert response["statusCode"] == 200
    assert response["body"] == page
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"

    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    for directive, tag in (("script-src", "script"), ("style-src", "style")):
        bodies = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", page, flags=re.DOTALL)
        digests = {f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies}
        assert set(policy[directive].split()) == digests
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert "unsafe" not in headers["Content-Security-Policy"]


def test_build_without_node_modules_reuses_the_committed_library_block(tmp_path) -> None:
    page, source = build.build(library_dir=tmp_path / "no_node_modules")
    assert source == f"the committed {build.OUTPUT.name}"
    assert build.vendored_block(page) == build.vendored_block(build.OUTPUT.read_text(encoding="utf-8"))
    assert page == build.OUTPUT.read_text(encoding="utf-8")
