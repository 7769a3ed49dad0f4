"""The benchmarks: each module measures one thing side by side in one run and records its figure with the command
that made it (benchmarks/RESULTS.md, benchmarks/results/). Run one from the repository root as
`python -m benchmarks.NAME --help`; all of them share benchmarks.harness (command line, threads, machine and load,
JSON-lines output, side-by-side timing)."""
