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

__all__ = ["Report", "Html", "figure", "table", "text", "heading", "group", "raw", "attention_viewer", "escape",
           "json_for_script", "build_report", "ReportPrompt", "DEFAULT_PROMPTS"]
