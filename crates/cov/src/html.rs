//! The HTML report: `index.html` (totals; per module, per source file and per function:
//! lines, functions and branches hit, with bars) and a page per source file (each line with
//! its count and branches, links back). Tables sort on a click of their heading, with a few
//! lines of inline script; nothing is loaded from elsewhere, so it opens from `file://`.

use crate::lines::{Sources, Totals};
use crate::report::{percent, ModuleCoverage};
use crate::CovError;
use std::fmt::Write as _;
use std::path::Path;

const STYLE: &str = "body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse;margin-bottom:2em}\
td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}th{background:#f4f4f4;cursor:pointer;user-select:none}\
th.sortable::after{content:' \\2195';color:#aaa}td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}\
.bar{display:inline-block;width:80px;height:10px;background:#f3b0b0;margin-right:6px;vertical-align:middle}\
.bar span{display:block;height:100%;background:#5cb85c}pre{margin:0}tr.hit td.src{background:#dfd}\
tr.miss td.src{background:#fdd}tr.part td.src{background:#ffd}td.c{color:#666;text-align:right}";

/// Sorts a table by the clicked column: by `data-v` where a cell has one, else by its text.
const SCRIPT: &str = "document.querySelectorAll('table.sort th').forEach(function(th){var i=th.cellIndex;th.classList.add('sortable');\
th.onclick=function(){var b=th.closest('table').tBodies[0],d=th.dataset.dir=th.dataset.dir==='a'?'d':'a';\
var k=function(r){var c=r.cells[i];return c.dataset.v!==undefined?Number(c.dataset.v):c.textContent;};\
Array.from(b.rows).sort(function(x,y){var p=k(x),q=k(y),o=typeof p==='number'?p-q:p.localeCompare(q);return d==='a'?o:-o;})\
.forEach(function(r){b.appendChild(r);});};});";

/// `s` with the characters markup gives a meaning replaced (for HTML and XML text and
/// attribute values).
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A cell with a bar and "hit of total (pct)", sorting by the percentage.
fn bar(hit: u64, total: u64) -> String {
    if total == 0 {
        return "<td class=n data-v=-1>–".to_string();
    }
    let p = percent(hit, total);
    format!("<td class=n data-v={p:.3}><span class=bar><span style=\"width:{p:.1}%\"></span></span>{hit} of {total} ({p:.1}%)")
}

fn totals_cells(t: &Totals) -> String {
    format!("{}{}{}", bar(t.lines_hit, t.lines), bar(t.functions_hit, t.functions), bar(t.branches_hit, t.branches))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>{}</title><style>{STYLE}</style><body>{body}<script>{SCRIPT}</script></body></html>",
        escape(title)
    )
}

/// Writes `index.html` and `files/N.html` (one per source file of `sources`) into `dir`.
pub fn write(modules: &[ModuleCoverage], sources: &Sources, dir: &Path) -> Result<(), CovError> {
    let io = |p: &Path, e| CovError::Io(p.display().to_string(), e);
    let files_dir = dir.join("files");
    std::fs::create_dir_all(&files_dir).map_err(|e| io(&files_dir, e))?;
    let pages: std::collections::HashMap<&str, usize> = sources.keys().enumerate().map(|(n, k)| (k.as_str(), n)).collect();
    let page_of = |source: &str| pages.get(source).map(|n| format!("files/{n}.html"));

    let mut all = Totals::default();
    for m in modules {
        all += m.totals();
    }
    let mut body = String::from("<h1>Coverage</h1><table><thead><tr><th>lines<th>functions<th>branches</thead><tbody><tr>");
    body.push_str(&totals_cells(&all));
    body.push_str("</tbody></table><h2>Modules</h2><table class=sort id=modules><thead><tr><th>module<th>lines<th>functions<th>branches<th>bytes covered<th>instructions covered</thead><tbody>");
    for m in modules {
        let _ = write!(
            body,
            "<tr><td>{}{}<td class=n data-v={bytes}>{bytes}<td class=n data-v={insns}>{insns}",
            escape(&m.path),
            totals_cells(&m.totals()),
            bytes = m.bytes,
            insns = m.instructions
        );
    }
    body.push_str("</tbody></table><h2>Source files</h2><table class=sort id=files><thead><tr><th>file<th>lines<th>functions<th>branches</thead><tbody>");
    for (n, (path, file)) in sources.iter().enumerate() {
        let _ = write!(body, "<tr><td><a href=\"files/{n}.html\">{}</a>{}", escape(path), totals_cells(&file.totals()));
    }
    body.push_str("</tbody></table><h2>Functions</h2><table class=sort id=functions><thead><tr><th>function<th>module<th>source<th>bytes<th>instructions<th>branches<th>entered</thead><tbody>");
    for m in modules {
        for f in &m.functions {
            let source = match &f.source {
                Some((file, line)) => match page_of(file) {
                    Some(p) => format!("<a href=\"{p}#L{line}\">{}:{line}</a>", escape(file)),
                    None => format!("{}:{line}", escape(file)),
                },
                None => String::new(),
            };
            let _ = write!(
                body,
                "<tr><td>{}<td>{}<td>{source}{}{}{}<td class=n data-v={5}>{5}",
                escape(&f.name),
                escape(m.path.rsplit('/').next().unwrap_or(&m.path)),
                bar(f.covered, f.size),
                bar(f.covered_instructions, f.instructions),
                bar(f.branches.1, f.branches.0),
                f.calls
            );
        }
    }
    body.push_str("</tbody></table>");
    let index = dir.join("index.html");
    std::fs::write(&index, page("rewire coverage", &body)).map_err(|e| io(&index, e))?;

    for (n, (path, file)) in sources.iter().enumerate() {
        let t = file.totals();
        let mut body = format!("<p><a href=\"../index.html\">← index</a></p><h1>{}</h1><table><thead><tr><th>lines<th>functions<th>branches</thead><tbody><tr>{}</tbody></table>", escape(path), totals_cells(&t));
        body.push_str("<table class=sort><thead><tr><th>function<th>line<th>entered</thead><tbody>");
        for (name, (line, calls)) in &file.functions {
            let _ = write!(
                body,
                "<tr><td><a href=\"#L{line}\">{}</a><td class=n data-v={line}>{line}<td class=n data-v={calls}>{calls}",
                escape(name)
            );
        }
        body.push_str("</tbody></table><table><thead><tr><th>line<th>count<th>branches<th>source</thead><tbody>");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut source_lines: Vec<&str> = text.lines().collect();
        let last = file.lines.keys().next_back().copied().unwrap_or(0) as usize;
        source_lines.resize(source_lines.len().max(last), "");
        for (i, src) in source_lines.iter().enumerate() {
            let line = i as u32 + 1;
            let (taken, outcomes) = file.line_branches(line);
            let branches = if outcomes == 0 { String::new() } else { format!("{taken}/{outcomes}") };
            let (class, count) = match file.lines.get(&line) {
                Some(0) => ("miss", "0".to_string()),
                Some(c) if taken < outcomes => ("part", c.to_string()),
                Some(c) => ("hit", c.to_string()),
                None => ("", String::new()),
            };
            let _ = write!(
                body,
                "<tr id=L{line} class=\"{class}\"><td class=c>{line}<td class=c>{count}<td class=c>{branches}<td class=src><pre>{}</pre>",
                escape(src)
            );
        }
        body.push_str("</tbody></table>");
        let p = dir.join(format!("files/{n}.html"));
        std::fs::write(&p, page(path, &body)).map_err(|e| io(&p, e))?;
    }
    Ok(())
}
