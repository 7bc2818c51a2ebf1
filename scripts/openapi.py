"""Write the API's OpenAPI document, merged by Powertools from every `functions/*/app.py`, to docs/openapi.json.

`python scripts/openapi.py` writes it; `--check` exits 1 when the committed file no longer matches the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = REPO_ROOT / "docs" / "openapi.json"


def openapi_document() -> str:
    """The merged document as formatted JSON text."""
    merge = OpenAPIMerge(
        title="k6 experiments API",
        version="1.0.0",
        description="Stores k6 load-test results in the experiments table and reads them back.",
        security_schemes={"apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header)},
        security=[{"apiKey": []}],
        on_conflict="error",
    )
    merge.discover(REPO_ROOT / "functions", pattern="app.py", recursive=True, project_root=REPO_ROOT)
    return json.dumps(json.loads(merge.get_openapi_json_schema()), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = parser.parse_args()
    document = openapi_document()
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != document:
            print(f"{DOCUMENT.relative_to(REPO_ROOT)} is out of date: run `make openapi`", file=sys.stderr)
            return 1
        print(f"{DOCUMENT.relative_to(REPO_ROOT)} matches the code")
        return 0
    DOCUMENT.write_text(document)
    print(f"wrote {DOCUMENT.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
