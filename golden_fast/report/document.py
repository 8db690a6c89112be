"""`Report`: an ordered list of sections (text, tables, figures, preformatted blocks) rendered
to a self-contained HTML file and a Markdown summary, with the JSON results beside them.

The HTML inlines every figure as a base64 PNG, so the one file can be mailed or attached; the
Markdown refers to the same PNGs saved under figures/. Every file is written to a temporary
name and renamed into place: an interrupted write never leaves a half report.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from golden_fast.fileio import atomic_path, atomic_write, atomic_write_json

from .environment import environment

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       background: #fff; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 3px solid #c9a227; padding-bottom: .3em; }
h2 { margin-top: 1.8em; color: #5a4a00; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 9px; text-align: right; }
th { background: #f4ecd0; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 13px; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #555; font-size: 14px; }
"""


@dataclasses.dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    json: Path
    figures: tuple[Path, ...]


@dataclasses.dataclass
class _Section:
    kind: str  # "text" | "table" | "figure" | "pre"
    title: str | None
    body: Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.3g}"
    return "" if value is None else str(value)


def _slug(text: str) -> str:
    s = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return "-".join(p for p in s.split("-") if p)[:60] or "figure"


class Report:
    """Build a report section by section, then `write(out_dir, results)`."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = title
        self.subtitle = subtitle
        self.sections: list[_Section] = []

    def text(self, title: str | None, body: str) -> Report:
        """Paragraphs (blank-line separated), shown as text in both formats."""
        self.sections.append(_Section("text", title, body))
        return self

    def table(self, title: str | None, header: Sequence[str], rows: Sequence[Sequence[Any]],
              note: str | None = None) -> Report:
        if any(len(r) != len(header) for r in rows):
            raise ValueError(f"table {title!r}: every row needs {len(header)} cells")
        self.sections.append(_Section("table", title, (list(header), [list(r) for r in rows], note)))
        return self

    def figure(self, title: str, png: str | Path, caption: str | None = None) -> Report:
        """A PNG file made beforehand (it is copied under figures/ and inlined in the HTML)."""
        png = Path(png)
        if not png.is_file():
            raise FileNotFoundError(f"figure {title!r}: no file {png}")
        self.sections.append(_Section("figure", title, (png, caption)))
        return self

    def pre(self, title: str | None, body: str) -> Report:
        """Preformatted text: tables printed by other parts, settings, conventions."""
        self.sections.append(_Section("pre", title, body))
        return self

    # -- rendering ----------------------------------------------------------------------------
    def _html(self, env: dict, created: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
               f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(self.title)}</h1>"]
        if self.subtitle:
            out.append(f"<p class='note'>{html.escape(self.subtitle)}</p>")
        out.append(f"<p class='note'>written {created}</p>")
        for s in self.sections:
            if s.title:
                out.append(f"<h2>{html.escape(s.title)}</h2>")
            if s.kind == "text":
                out += [f"<p>{html.escape(p.strip())}</p>" for p in s.body.split("\n\n") if p.strip()]
            elif s.kind == "pre":
                out.append(f"<pre>{html.escape(s.body)}</pre>")
            elif s.kind == "table":
                header, rows, note = s.body
                out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
                for r in rows:
                    out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>")
                out.append("</table>")
                if note:
                    out.append(f"<p class='note'>{html.escape(note)}</p>")
            elif s.kind == "figure":
                png, caption = s.body
                data = base64.b64encode(png.read_bytes()).decode()
                out.append(f"<img alt='{html.escape(s.title or '')}' src='data:image/png;base64,{data}'>")
                if caption:
                    out.append(f"<p class='note'>{html.escape(caption)}</p>")
        out.append("<h2>Environment</h2><pre>" + html.escape(json.dumps(env, indent=1)) + "</pre>")
        out.append("</body></html>")
        return "\n".join(out)

    def _markdown(self, env: dict, created: str, fig_names: dict[int, str]) -> str:
        out = [f"# {self.title}", ""]
        if self.subtitle:
            out += [self.subtitle, ""]
        out += [f"written {created}", ""]
        for i, s in enumerate(self.sections):
            if s.title:
                out += [f"## {s.title}", ""]
            if s.kind == "text":
                out += [s.body.strip(), ""]
            elif s.kind == "pre":
                out += ["```", s.body.rstrip(), "```", ""]
            elif s.kind == "table":
                header, rows, note = s.body
                out.append("| " + " | ".join(str(h) for h in header) + " |")
                out.append("|" + "---|" * len(header))
                out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
                out.append("")
                if note:
                    out += [note, ""]
            elif s.kind == "figure":
                _, caption = s.body
                out += [f"![{s.title}](figures/{fig_names[i]})", ""]
                if caption:
                    out += [caption, ""]
        out += ["## Environment", "", "```json", json.dumps(env, indent=1), "```", ""]
        return "\n".join(out)

    def write(self, out_dir: str | Path, results: dict[str, Any] | None = None,
              stem: str = "report") -> ReportPaths:
        """Write <stem>.html, <stem>.md, results.json and figures/*.png under out_dir."""
        out = Path(out_dir)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        env = environment()
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        fig_names: dict[int, str] = {}
        figs = []
        for i, s in enumerate(self.sections):
            if s.kind == "figure":
                name = f"{len(figs):02d}-{_slug(s.title or 'figure')}.png"
                dest = out / "figures" / name
                if s.body[0].resolve() != dest.resolve():
                    with atomic_path(dest) as tmp:
                        shutil.copyfile(s.body[0], tmp)
                fig_names[i] = name
                figs.append(dest)
        paths = ReportPaths(out / f"{stem}.html", out / f"{stem}.md", out / "results.json", tuple(figs))
        payload = {"title": self.title, "created": created, "environment": env, "results": results or {}}
        atomic_write_json(paths.json, payload, indent=1, default=_json_default)
        atomic_write(paths.markdown, self._markdown(env, created, fig_names))
        atomic_write(paths.html, self._html(env, created))
        return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)
