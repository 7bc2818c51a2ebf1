#!/bin/sh
# The entrypoint contract of AWS's Lambda base images (public.ecr.aws/lambda/python): the handler is the only
# argument; outside Lambda (no AWS_LAMBDA_RUNTIME_API) the Runtime Interface Emulator serves the bootstrap on
# port 8080, inside Lambda the bootstrap talks to the Runtime API itself. `sam local` does not use this file: it
# starts its own emulator (/var/rapid/aws-lambda-rie), which runs /var/runtime/bootstrap.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie "$RUNTIME_ENTRYPOINT"
else
  exec "$RUNTIME_ENTRYPOINT"
fi
