"""Read-side exceptions the API maps to statuses, in a module that imports nothing.

`experiments.http` names them to register its error handlers; here they cost the report function nothing,
while `experiments.query` (which raises them) and its statistics load only where reads are served.
"""


class InvalidCursor(ValueError):
    """The cursor was not one this API handed out."""


class NotFound(LookupError):
    """Nothing is stored under the name asked for."""


class TooManySeries(ValueError):
    """The metrics and variants asked for make more series than one response may hold."""
