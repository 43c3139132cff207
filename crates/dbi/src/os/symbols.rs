//! The function symbols of a program's file (symtab, else dynsym), for checking that an
//! address the user names is a function's start.

use object::{Object, ObjectSymbol, SymbolKind};

/// The link-time addresses of the functions `path` names, `None` when it names none (a
/// stripped file) or cannot be read.
pub fn function_starts(path: &std::path::Path) -> Option<Vec<u64>> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let of = |syms: &mut dyn Iterator<Item = object::Symbol<'_, '_>>| -> Vec<u64> {
        syms.filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0).map(|s| s.address()).collect()
    };
    let mut starts = of(&mut file.symbols());
    if starts.is_empty() {
        starts = of(&mut file.dynamic_symbols());
    }
    (!starts.is_empty()).then_some(starts)
}
