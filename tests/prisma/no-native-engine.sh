#!/bin/sh
echo "no native Prisma schema engine here: prisma.config.ts uses the wasm one (engine: js)" >&2
exit 1
