//! lcov tracefiles (as `genhtml`, `lcov -a` and CI services read them): per source file its
//! functions (`FN`, `FNDA`, `FNF`, `FNH`), branches (`BRDA`, `BRF`, `BRH`) and lines with
//! their execution counts (`DA`, `LF`, `LH`).

use crate::lines::Sources;
use std::fmt::Write as _;

/// The tracefile of `sources`.
pub fn tracefile(sources: &Sources) -> String {
    let mut s = String::from("TN:\n");
    for (path, file) in sources {
        let t = file.totals();
        let _ = writeln!(s, "SF:{path}");
        for (name, (line, _)) in &file.functions {
            let _ = writeln!(s, "FN:{line},{name}");
        }
        for (name, (_, calls)) in &file.functions {
            let _ = writeln!(s, "FNDA:{calls},{name}");
        }
        let _ = writeln!(s, "FNF:{}\nFNH:{}", t.functions, t.functions_hit);
        for ((line, block), outcomes) in &file.branches {
            for (branch, count) in outcomes.iter().enumerate() {
                let taken = count.map_or("-".to_string(), |c| c.to_string());
                let _ = writeln!(s, "BRDA:{line},{block},{branch},{taken}");
            }
        }
        let _ = writeln!(s, "BRF:{}\nBRH:{}", t.branches, t.branches_hit);
        for (line, count) in &file.lines {
            let _ = writeln!(s, "DA:{line},{count}");
        }
        let _ = writeln!(s, "LF:{}\nLH:{}\nend_of_record", t.lines, t.lines_hit);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::SourceFile;

    #[test]
    fn records_in_lcov_order() {
        let mut f = SourceFile::default();
        f.lines.extend([(3, 10), (4, 0)]);
        f.functions.insert("main".into(), (3, 1));
        f.branches.insert((3, 0), [Some(10), None]);
        let text = tracefile(&Sources::from([("/a.c".to_string(), f)]));
        assert_eq!(
            text,
            "TN:\nSF:/a.c\nFN:3,main\nFNDA:1,main\nFNF:1\nFNH:1\nBRDA:3,0,0,10\nBRDA:3,0,1,-\nBRF:2\nBRH:1\nDA:3,10\nDA:4,0\nLF:2\nLH:1\nend_of_record\n"
        );
    }
}
