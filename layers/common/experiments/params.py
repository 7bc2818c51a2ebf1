"""Query parameter types the handlers share: names and variants by the reports' rule (`experiments.names`:
NFC, so both spellings of `café` match), with the lengths of `experiments.limits`."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import AfterValidator

from experiments.limits import MAX_NAME_LENGTH, MAX_VARIANT_LENGTH
from experiments.names import experiment_label

Name = Annotated[str, Query(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(experiment_label)]
OptionalName = Annotated[str | None, Query(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(experiment_label)]
Variant = Annotated[str, Query(min_length=1, max_length=MAX_VARIANT_LENGTH), AfterValidator(experiment_label)]
OptionalVariant = Annotated[
    str | None, Query(min_length=1, max_length=MAX_VARIANT_LENGTH), AfterValidator(experiment_label)
]
