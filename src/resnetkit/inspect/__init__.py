"""Looking inside networks: ``summary`` (layers, parameters, MACs, receptive fields) and ``explain``."""
from .explain import Explanation, explain
from .summary import SummaryReport, summary

__all__ = ["summary", "explain", "SummaryReport", "Explanation"]
