"""The study built on the library: run configs, runs and studies as engine jobs, the report."""
