"""HTML reports: a small self-contained builder (:mod:`interplab.report.html`) and the model report
(:func:`build_report`)."""

from interplab.report.html import (
    Html,
    Report,
    attention_viewer,
    escape,
    figure,
    group,
    heading,
    json_for_script,
    raw,
    table,
    text,
)
from interplab.report.model_report import DEFAULT_PROMPTS, ReportPrompt, build_report

__all__ = [
    "DEFAULT_PROMPTS",
    "Html",
    "Report",
    "ReportPrompt",
    "attention_viewer",
    "build_report",
    "escape",
    "figure",
    "group",
    "heading",
    "json_for_script",
    "raw",
    "table",
    "text",
]
