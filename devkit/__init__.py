"""Development-only helpers shared by scripts, tests and benchmarks (never shipped in the Lambda layer).

`devkit.localdb`: the embedded PostgreSQL and scratch databases; `devkit.processes`: child servers that print a
ready line.
"""
