//! Cobertura XML (coverage-04.dtd), as GitLab, Jenkins and Azure DevOps read it: a package
//! per module, a class per source file, its functions as methods, its lines with hit counts
//! and, on lines with conditional branches, their condition coverage.

use crate::html::escape;
use crate::lines::{SourceFile, Totals};
use crate::report::ModuleCoverage;
use std::fmt::Write as _;

fn rate(hit: u64, total: u64) -> String {
    format!("{:.4}", if total == 0 { 1.0 } else { hit as f64 / total as f64 })
}

fn rates(t: &Totals) -> String {
    format!("line-rate=\"{}\" branch-rate=\"{}\" complexity=\"0\"", rate(t.lines_hit, t.lines), rate(t.branches_hit, t.branches))
}

fn lines(out: &mut String, file: &SourceFile) {
    out.push_str("<lines>");
    for (line, hits) in &file.lines {
        let (taken, outcomes) = file.line_branches(*line);
        if outcomes == 0 {
            let _ = write!(out, "<line number=\"{line}\" hits=\"{hits}\" branch=\"false\"/>");
            continue;
        }
        let pct = 100 * taken / outcomes;
        let _ = write!(
            out,
            "<line number=\"{line}\" hits=\"{hits}\" branch=\"true\" condition-coverage=\"{pct}% ({taken}/{outcomes})\">\
             <conditions><condition number=\"0\" type=\"jump\" coverage=\"{pct}%\"/></conditions></line>"
        );
    }
    out.push_str("</lines>");
}

/// The Cobertura document for `modules`; `timestamp` in seconds since the epoch.
pub fn document(modules: &[ModuleCoverage], timestamp: u64) -> String {
    let mut all = Totals::default();
    for m in modules {
        all += crate::lines::totals(m.sources.values());
    }
    // No DOCTYPE: readers do not want one, and a validating one would go to the network for it.
    let mut out = String::from("<?xml version=\"1.0\"?>\n<!-- coverage-04.dtd -->\n");
    let _ = write!(
        out,
        "<coverage {} lines-covered=\"{}\" lines-valid=\"{}\" branches-covered=\"{}\" branches-valid=\"{}\" version=\"rewire {}\" timestamp=\"{timestamp}\">",
        rates(&all),
        all.lines_hit,
        all.lines,
        all.branches_hit,
        all.branches,
        env!("CARGO_PKG_VERSION")
    );
    // Paths are absolute; the one source root is "/", and file names are relative to it.
    out.push_str("<sources><source>/</source></sources><packages>");
    for m in modules {
        let _ = write!(out, "<package name=\"{}\" {}><classes>", escape(&m.path), rates(&crate::lines::totals(m.sources.values())));
        for (path, file) in &m.sources {
            let relative = path.trim_start_matches('/');
            let _ = write!(out, "<class name=\"{}\" filename=\"{}\" {}><methods>", escape(path), escape(relative), rates(&file.totals()));
            for (name, (line, calls)) in &file.functions {
                let _ = write!(
                    out,
                    "<method name=\"{}\" signature=\"\" line-rate=\"{}\" branch-rate=\"1.0000\" complexity=\"0\"><lines><line number=\"{line}\" hits=\"{calls}\" branch=\"false\"/></lines></method>",
                    escape(name),
                    rate((*calls > 0) as u64, 1)
                );
            }
            out.push_str("</methods>");
            lines(&mut out, file);
            out.push_str("</class>");
        }
        out.push_str("</classes></package>");
    }
    out.push_str("</packages></coverage>\n");
    out
}
