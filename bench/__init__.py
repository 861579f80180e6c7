"""tracehouse benchmarks (``tracehouse bench``): every stage measured on this machine, results in bench/results/."""
