"""Run directories, metrics logs, figures and the HTML report."""

from siegecraft.core.results.report import build_report, summary_table
from siegecraft.core.results.rundir import RunDir, Stopwatch, package_versions

__all__ = ["RunDir", "Stopwatch", "build_report", "package_versions", "summary_table"]
