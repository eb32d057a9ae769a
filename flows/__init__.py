"""Prefect flows running kmdist on a Dask cluster (see `flows.segment`)."""
