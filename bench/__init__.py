"""In-process benchmarks of the server's stages (imports `server`); `make bench` runs them via `bench.run`."""
