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

/// The imported functions of `path` by the link-time address of the slot (GOT entry) the
/// dynamic loader fills with each: what `call foo@plt` and `call *foo@GOTPCREL(%rip)` jump
/// through. Empty when the file cannot be read or imports nothing.
pub fn import_slots(path: &std::path::Path) -> std::collections::HashMap<u64, String> {
    use object::{ObjectSymbolTable, RelocationTarget};
    let Ok(data) = std::fs::read(path) else { return Default::default() };
    let Ok(file) = object::File::parse(&*data) else { return Default::default() };
    let (Some(relocs), Some(dynsym)) = (file.dynamic_relocations(), file.dynamic_symbol_table()) else { return Default::default() };
    relocs
        .filter_map(|(slot, r)| match r.target() {
            RelocationTarget::Symbol(i) => {
                let name = dynsym.symbol_by_index(i).ok()?.name().ok()?;
                Some((slot, name.split('@').next().unwrap_or(name).to_string()))
            }
            _ => None,
        })
        .collect()
}
