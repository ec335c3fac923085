"""Benchmarks: run by hand, they print figures (they are not tests).

    .venv/bin/python -m bench.mesh_throughput   # issue 2: mesh vs bare echo throughput
    .venv/bin/python -m bench.run_latency       # issue 3: run latency and watcher fan-out

Each starts its servers as separate processes on free 127.0.0.1 ports, is
bounded in time and request count, and stops everything it started (also
on an error, Ctrl-C or SIGTERM). The servers they start besides the mesh:
`bench.echo_server` (bare unary echo), `bench.machine` (an SDK machine that
brews instantly), `bench.relay` (bare Run/Watch relay) and
`bench.stream_server` (bare ProgramEvent streaming).
"""
