"""What the tests and the benchmarks share: real data, scratch repositories, a real Slurm on localhost."""
