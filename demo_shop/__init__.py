"""The demo shop: a generated e-commerce database (and browsing events) with known truth, for the demo, tests and benchmarks."""
