"""The report's stylesheet: one file's worth of CSS, inline in the page (no web fonts: the system's).

On screen: a readable column, tables that scroll sideways rather than squeeze, headers that stay in
view. In print (to PDF): A4 landscape, no button or contents list, table headers repeated on each
page, no row or figure cut across pages, the banner kept red.
"""

CSS = """
:root { --ink: #1c2430; --muted: #5d6875; --line: #dde2e8; --soft: #f5f7fa; --accent: #1f5fa8;
  --alarm: #b42318; --warn: #c27c0e; --good: #1e7b45; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
  color: var(--ink); max-width: 1280px; margin: 0 auto; padding: 20px 32px 64px; background: #fff; }
h1 { font-size: 23px; margin: 14px 0 2px; }
h2 { font-size: 18px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 14.5px; margin: 18px 0 6px; }
a { color: var(--accent); }
code { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--soft); padding: 0 3px;
  border-radius: 3px; }
.quiet { color: var(--muted); }
.question { font-size: 16px; border-left: 4px solid var(--accent); padding: 4px 12px; background: var(--soft); }
.banner { background: var(--alarm); color: #fff; font-weight: 700; font-size: 15px; padding: 10px 16px;
  border-radius: 6px; letter-spacing: .02em; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
header p { margin: 2px 0 0; }
button { font: inherit; font-size: 12px; margin-left: 8px; padding: 2px 10px; border: 1px solid var(--line);
  border-radius: 4px; background: var(--soft); color: var(--ink); cursor: pointer; }
nav.toc ol { display: flex; flex-wrap: wrap; gap: 2px 18px; padding: 8px 0 0; margin: 8px 0 0; list-style: none;
  border-top: 1px solid var(--line); font-size: 13px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; position: sticky; top: 0; white-space: nowrap; }
th.num, td.num { text-align: right; white-space: nowrap; }
td.label { white-space: nowrap; }
table.design td:nth-child(4), table.design td:nth-child(5) { white-space: normal; max-width: 46ch; }
tbody tr:hover td { background: #fafbfc; }
tr.sig td { font-weight: 650; }
tr.confounded td:first-child { box-shadow: inset 3px 0 var(--warn); }
tr.section td { border-top: 2px solid #a9b3bf; }
table.comparison td:nth-child(n+5) { min-width: 4.5em; }
tr.state-failed td, tr.state-corrupt td { color: var(--alarm); }
tr.state-running td, tr.state-pending td, tr.state-requeued td { color: var(--muted); }
tr.state-missing td, tr.state-unknown td { color: var(--warn); }
tr.code-changed td:last-child { color: var(--alarm); font-weight: 600; }
.legend { color: var(--muted); font-size: 12px; max-width: 120ch; }
figure { margin: 14px 0 22px; break-inside: avoid; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; max-width: 120ch; }
ol.failures { padding-left: 20px; }
ol.failures li { margin-bottom: 12px; }
ol.failures p { margin: 2px 0; }
pre.log { background: #111820; color: #e3e9ef; padding: 8px 12px; border-radius: 4px;
  font: 11px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap; word-break: break-all;
  max-height: 28em; overflow: auto; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.alarm { color: var(--alarm); font-weight: 650; }
@page { size: A4 landscape; margin: 11mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5px; }
  nav.toc, button { display: none; }
  th { position: static; }
  thead { display: table-header-group; }
  tr, figure, li.failure { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  .scroll { overflow: visible; }
  table { font-size: 8.5px; width: 100%; }
  th, td, td.label, th.num, td.num { padding: 2px 4px; white-space: normal; }
  figure svg { max-height: 165mm; width: auto; max-width: 100%; margin: 0 auto; }
  pre.log { background: #fff; color: #000; border: 1px solid #999; max-height: none; }
  a { color: inherit; text-decoration: none; }
  .legend, figcaption { font-size: 9px; }
}
"""
