"""The service's exceptions live in one module and each has exactly one answer (issue 14, item 1)."""

from __future__ import annotations

import inspect
from http import HTTPStatus

import pytest

from experiments import errors, http

SERVICE_ERRORS = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.ServiceError)]


@pytest.mark.parametrize("cls", [c for c in SERVICE_ERRORS if c is not errors.ServiceError], ids=lambda c: c.__name__)
def test_every_service_exception_has_one_listed_status(cls: type[Exception]) -> None:
    assert cls in http.ERROR_STATUSES


@pytest.mark.parametrize("module", ["config", "db", "query", "store", "http", "series", "changes"])
def test_no_module_defines_exceptions_of_its_own(module: str) -> None:
    mod = __import__(f"experiments.{module}", fromlist=["_"])
    own = [
        name
        for name, cls in inspect.getmembers(mod, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == mod.__name__
    ]
    assert own == []


def test_the_body_check_is_one_middleware_and_no_handler_repeats_it() -> None:
    assert not hasattr(http, "_body_problem")
    assert http.BODY_ROUTE["middlewares"][0] is http.check_body


def test_a_subclass_is_answered_as_its_base() -> None:
    class ReadOnly(errors.DatabaseUnavailable):
        pass

    assert http.error_kind(ReadOnly()).status == HTTPStatus.SERVICE_UNAVAILABLE
    assert http.error_kind(KeyError()).status == HTTPStatus.INTERNAL_SERVER_ERROR


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (None, True),
        ("application/json", True),
        ("Application/JSON; Charset=UTF-8", True),
        ("APPLICATION/VND.API+JSON", True),
        ("text/plain", False),
        ("Application/XML", False),
    ],
)
def test_media_types_are_case_insensitive(content_type: str | None, accepted: bool) -> None:
    assert http.is_json(content_type) is accepted
