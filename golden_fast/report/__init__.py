"""Reports a user can keep and show: one self-contained HTML file (figures inlined), a
Markdown summary and the JSON results, written together and atomically.

    from golden_fast.report import Report
    rep = Report("golden-fast run: smollm2-135m")
    rep.text("Chosen layer", "LGA chose layer 6 ...")
    rep.table("Metrics", ["metric", "pre", "post"], rows)
    rep.figure("LGA scores", png_path)
    paths = rep.write(out_dir, results={...})   # report.html, report.md, results.json
"""

from .document import Report, ReportPaths
from .environment import environment

__all__ = ["Report", "ReportPaths", "environment"]
