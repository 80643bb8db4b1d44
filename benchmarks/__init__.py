"""Latency measurement: protocol, runners, tables, the harness and latency prediction."""

from benchmarks import runners  # noqa: F401  (registers the runners)
from benchmarks.importers import import_table
from benchmarks.predict import LatencyModel
from benchmarks.protocol import Protocol, Samples, measure
from benchmarks.table import LatencyTable, Row, load_table, required_rows

__all__ = ["import_table", "LatencyModel", "Protocol", "Samples", "measure", "LatencyTable", "Row", "load_table", "required_rows"]
