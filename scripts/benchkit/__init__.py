"""The benchmark harness behind `scripts/bench`.

Modules: `wire` (raw WebSocket and HTTP/1.1 bytes, sans-I/O), `workers` (the load-generator
processes), `procs` (process, CPU and memory bookkeeping), `peers` (the peer servers),
`relay` (a Relay server under test and its accounts), `scenarios` (the measured scenarios) and
`report` (the Markdown table and the JSON file).
"""
