"""Invoke a built Lambda handler the way the Lambda runtime would, with nothing but the build output.

Run as `python3.12 -I -S _invoke.py` with a JSON request on stdin:
    {"function_dir": ..., "layer_dir": ..., "handler": "app.lambda_handler",
     "timeout_s": 10, "events": [{...}, ...], "output": "<file>"}
`-I -S` leaves only the standard library on `sys.path` (no site-packages, no PYTHONPATH, no current folder);
this script then adds the function folder and the layer's `python/` folder in Lambda's order (/var/task
first, then /opt/python), so every import comes from what `sam build` produced. It writes one JSON document
to `output` (stdout is the function's log, as in Lambda): the handler's result (or the exception) per
event, and where the key modules were imported from.
"""

import importlib
import json
import sys
import time
import traceback
import uuid
from pathlib import Path


class LambdaContext:
    """The context object's attributes that handlers and Powertools read, with a real deadline."""

    def __init__(self, function_name: str, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:eu-west-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2025/11/01/[$LATEST]0123456789abcdef"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    request = json.load(sys.stdin)
    function_dir = Path(request["function_dir"])
    layer_python = Path(request["layer_dir"]) / "python"
    layer_site = layer_python / "lib" / "python3.12" / "site-packages"
    if any("site-packages" in entry for entry in sys.path):
        raise SystemExit(f"not isolated: {sys.path}")
    sys.path[:0] = [str(function_dir), str(layer_site), str(layer_python)]

    module_name, _, function_name = request["handler"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    results = []
    for event in request["events"]:
        context = LambdaContext(function_dir.name, request.get("timeout_s", 10))
        started = time.monotonic()
        try:
            results.append({"result": handler(event, context), "seconds": time.monotonic() - started})
        except Exception as error:
            results.append({"error": repr(error), "traceback": traceback.format_exc()})
    origins = {
        name: getattr(sys.modules.get(name), "__file__", None)
        for name in ("experiments", "psycopg", "psycopg_binary", "pydantic", "pydantic_core", "aws_lambda_powertools")
    }
    report = {"results": results, "origins": origins, "sys_path": sys.path}
    Path(request["output"]).write_text(json.dumps(report, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
