"""The template's Api events and the handlers' routes must be the same set.

A route a handler serves without an event in template.yaml answers "Missing Authentication Token" in AWS (and
in the local API, which routes by the template); an event without a handler route is a 404 from the function.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from support import REPO_ROOT, load_function, load_script


def template_routes() -> dict[str, set[tuple[str, str]]]:
    """function folder → {(METHOD, path)} of its Api events in template.yaml."""
    routes, _ = load_script("local_api").routes_from_template(REPO_ROOT / "template.yaml")
    by_function: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for route in routes:
        by_function[route.function.code_dir.name].add((route.method, route.resource))
    return by_function


@pytest.mark.parametrize("function", sorted(template_routes()))
def test_every_template_event_is_a_handler_route_and_back(function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused")  # importing a handler opens nothing
    app = load_function(function).app
    handler_routes = {(route.method, route.path) for route in app._static_routes + app._dynamic_routes}
    assert template_routes()[function] == handler_routes
