//! A JSON summary for scripts: totals, and per module (with its functions) and per source
//! file the lines, functions and branches there are and those that ran.

use crate::lines::{Sources, Totals};
use crate::report::ModuleCoverage;
use std::fmt::Write as _;

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn totals(t: &Totals) -> String {
    format!(
        "\"lines\":{},\"lines_hit\":{},\"functions\":{},\"functions_hit\":{},\"branches\":{},\"branches_hit\":{}",
        t.lines, t.lines_hit, t.functions, t.functions_hit, t.branches, t.branches_hit
    )
}

/// The summary of `modules` and their merged `sources`.
pub fn summary(modules: &[ModuleCoverage], sources: &Sources) -> String {
    let mut all = Totals::default();
    for m in modules {
        all += m.totals();
    }
    let mut out = format!("{{\"totals\":{{{}}},\"modules\":[", totals(&all));
    for (i, m) in modules.iter().enumerate() {
        let debug = m.debug_file.as_ref().map_or("null".to_string(), |p| string(&p.display().to_string()));
        let _ = write!(
            out,
            "{}{{\"path\":{},\"debug_file\":{debug},\"blocks\":{},\"bytes\":{},\"instructions\":{},{},\"function_list\":[",
            if i > 0 { "," } else { "" },
            string(&m.path),
            m.blocks,
            m.bytes,
            m.instructions,
            totals(&m.totals())
        );
        for (j, f) in m.functions.iter().enumerate() {
            let (file, line) = f.source.as_ref().map_or(("null".to_string(), "null".to_string()), |(p, l)| (string(p), l.to_string()));
            let _ = write!(
                out,
                "{}{{\"name\":{},\"address\":{},\"size\":{},\"bytes_covered\":{},\"instructions\":{},\"instructions_covered\":{},\
                 \"entered\":{},\"branches\":{},\"branches_hit\":{},\"file\":{file},\"line\":{line}}}",
                if j > 0 { "," } else { "" },
                string(&f.name),
                f.address,
                f.size,
                f.covered,
                f.instructions,
                f.covered_instructions,
                f.calls,
                f.branches.0,
                f.branches.1
            );
        }
        out.push_str("]}");
    }
    out.push_str("],\"files\":[");
    for (i, (path, file)) in sources.iter().enumerate() {
        let _ = write!(out, "{}{{\"path\":{},{}}}", if i > 0 { "," } else { "" }, string(path), totals(&file.totals()));
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_escaped() {
        assert_eq!(super::string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
