"""tracehouse benchmarks (``tracehouse bench``): each stage measured on this machine, into bench/results/."""
