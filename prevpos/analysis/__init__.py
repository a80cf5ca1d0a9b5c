"""What an analysis plugin needs: the probe run it reads, the findings it returns, the figures it draws."""

from prevpos.analysis.findings import Findings
from prevpos.analysis.plugin import AnalysisPlugin
from prevpos.analysis.probe import ProbeRun

__all__ = ["AnalysisPlugin", "Findings", "ProbeRun"]
