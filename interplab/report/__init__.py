"""HTML reports: a small self-contained builder (:mod:`interplab.report.html`) and the model report
(:func:`build_report`)."""

from interplab.report import html
from interplab.report.html import *  # the builder's public names, listed once in html.__all__
from interplab.report.model_report import DEFAULT_PROMPTS, ReportPrompt, build_report

__all__ = ["DEFAULT_PROMPTS", "ReportPrompt", "build_report"]
__all__ += html.__all__
