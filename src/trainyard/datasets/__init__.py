"""Jet datasets: the shared Parquet schema and the generators that write it."""
