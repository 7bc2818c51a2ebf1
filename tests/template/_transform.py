"""Print template.yaml transformed to plain CloudFormation JSON, offline (run with .venv-sam/bin/python).

aws-sam-translator lives in `.venv-sam` with the SAM CLI (its pins would hold back `.venv`'s pydantic), so the
tests call this script in a subprocess: `python _transform.py template.yaml '{"Param": "value"}'`.
No AWS call is made: the managed-policy loader is a stub, which is enough because the template names managed
policies only by ARN (SAM adds its own by ARN too), and local code folders are replaced by S3 locations first,
as `sam package` would.
"""

import json
import os
import sys
from pathlib import Path

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class OfflinePolicyLoader:
    """Resolves no managed-policy names: a template that used one by name would fail to transform here."""

    def load(self) -> dict[str, str]:
        return {}


def as_packaged(template: dict) -> dict:
    """Local CodeUri/ContentUri folders become S3 locations, as `sam package` leaves them for the transform."""
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                properties[key] = f"s3://packaged-artifacts/{properties[key].strip('/')}.zip"
    return template


def main() -> None:
    # The translator asks boto3 for the region; give it one and keep boto3 away from instance metadata.
    region = os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    template = as_packaged(yaml_parse(Path(sys.argv[1]).read_text(encoding="utf-8")))
    parameters = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    parameters.setdefault("AWS::Region", region)
    parameters.setdefault("AWS::AccountId", "123456789012")
    parameters.setdefault("AWS::Partition", "aws")
    parameters.setdefault("AWS::StackName", "k6-experiments-test")
    json.dump(transform(template, parameters, OfflinePolicyLoader()), sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main()
