"""The validation report as one self-contained HTML page (`report.html`): readable offline.

GX's own Data Docs index renders its links with JavaScript from a CDN and its pass/fail icons
with a CDN font, so offline it shows an empty page. This page needs nothing but the file: every
check with its outcome in words and colour (passed, quarantined with the count, blocking), the
row counts, example rows, and links to GX's per-table result pages for the details.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, select_autoescape

OUTCOME_COLOUR = {"passed": "#1a7f37", "quarantined": "#9a6700", "blocking": "#cf222e"}

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data validation: {{ dataset }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #1f2328; }
h1 .verdict { color: {{ colours["passed" if passed else "blocking"] }}; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1.5em; table-layout: fixed; }
table.checks col.narrow { width: 7em; } table.checks col.check { width: 19em; } table.checks col.count { width: 6em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.outcome { font-weight: 600; white-space: nowrap; }
code { font-size: 12px; overflow-wrap: anywhere; color: #57606a; }
td { overflow-wrap: anywhere; }
</style></head><body>
<h1>Data validation: {{ dataset }} <span class="verdict">{{ "PASSED" if passed else "FAILED" }}</span></h1>
<p>{{ "Every blocking check passed; quarantined rows were set aside with their reasons." if passed else
      "A blocking check failed: nothing was trained." }}</p>
<h2>Tables</h2>
<table><tr><th>table</th><th>rows read</th><th>quarantined</th><th>details (Great Expectations)</th></tr>
{% for table, rows in row_counts.items() %}
<tr><td>{{ table }}</td><td>{{ "{:,}".format(rows) }}</td><td>{{ "{:,}".format(quarantined.get(table, 0)) }}</td>
<td>{% for link in links.get(table, []) %}<a href="{{ link }}">result page</a> {% else %}—{% endfor %}</td></tr>
{% endfor %}</table>
<h2>Checks</h2>
<table class="checks"><col class="narrow"><col class="narrow"><col class="check"><col class="narrow"><col class="count"><col>
<tr><th>table</th><th>column</th><th>check</th><th>outcome</th><th>rows</th><th>detail and examples</th></tr>
{% for c in checks %}
<tr><td>{{ c.table }}</td><td>{{ c.column or "" }}</td><td>{{ c.check }}</td>
<td class="outcome" style="color: {{ colours[c.outcome] }}">{{ c.outcome }}</td>
<td>{{ "" if c.rows is none else "{:,}".format(c.rows) }}</td>
<td>{{ c.detail }}{% for e in c.examples %}<br><code>{{ e }}</code>{% endfor %}</td></tr>
{% endfor %}</table>
{% if notes %}<h2>Notes</h2><ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
<p>Machine-readable: <a href="report.json">report.json</a>{% if quarantine %}; quarantined rows with their reasons
in <code>quarantine/</code>{% endif %}; Great Expectations' own site: <a href="{{ gx_index }}">index</a>
(needs the internet to render).</p>
</body></html>
"""


@dataclass(frozen=True)
class CheckOutcome:
    table: str
    column: str | None
    check: str
    outcome: str  # passed, quarantined or blocking
    rows: int | None
    detail: str
    examples: tuple[str, ...] = ()


def write_html_report(
    out_dir: Path,
    dataset: str,
    passed: bool,
    row_counts: dict[str, int],
    quarantined: dict[str, int],
    checks: list[CheckOutcome],
    notes: list[str],
) -> Path:
    """Write `out_dir/report.html`, linking GX's pages under `out_dir/gx/`; returns its path."""
    out_dir = Path(out_dir)
    site = out_dir / "gx" / "uncommitted" / "data_docs" / "local_site"
    links = {}
    for page in sorted((site / "validations").rglob("lightpersml-*.html")):  # validations/<suite path>/…/<suite>.html
        links.setdefault(page.stem.removeprefix("lightpersml-"), []).append(page.relative_to(out_dir).as_posix())
    order = {"blocking": 0, "quarantined": 1, "passed": 2}
    html = (
        Environment(autoescape=select_autoescape(default=True))
        .from_string(TEMPLATE)
        .render(
            dataset=dataset,
            passed=passed,
            row_counts=row_counts,
            quarantined=quarantined,
            links=links,
            checks=sorted(checks, key=lambda c: (order[c.outcome], c.table)),
            notes=notes,
            colours=OUTCOME_COLOUR,
            gx_index=(site / "index.html").relative_to(out_dir).as_posix(),
            quarantine=any(quarantined.values()),
        )
    )
    path = out_dir / "report.html"
    path.write_text(html)
    return path
