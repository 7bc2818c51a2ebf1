"""Start awslambdaric the way Lambda's Python runtime does: the function's folder and the layers first on sys.path.

Lambda's order: LAMBDA_TASK_ROOT (/var/task), then the layers (/opt/python/lib/python3.12/site-packages,
/opt/python), then the runtime's own packages (boto3 in /var/lang's site-packages, the runtime client in
/var/runtime). So a package in a layer shadows the runtime's copy, exactly as in AWS.
"""

import os
import sys

task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
runtime_dir = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if entry != runtime_dir]
sys.path[:0] = [task_root, "/opt/python/lib/python3.12/site-packages", "/opt/python"]
sys.path.append(runtime_dir)

from awslambdaric.__main__ import main  # noqa: E402 - importable only once /var/runtime is on sys.path

# The base image's entrypoint passes the handler as _HANDLER; SAM's emulator is started without it and names the
# handler in AWS_LAMBDA_FUNCTION_HANDLER.
handler = os.environ.get("_HANDLER") or os.environ["AWS_LAMBDA_FUNCTION_HANDLER"]
os.chdir(task_root)
main(["awslambdaric", handler])  # the runtime client's own command line: `python -m awslambdaric <handler>`
