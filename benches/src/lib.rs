//! Benchmarks; each binary prints its baseline and the ratio.
