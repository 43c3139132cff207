//! Loading a program the way the kernel's `execve` does: find it, follow `#!`, check that it
//! is an x86-64 ELF executable, map its segments and those of its ELF interpreter, and say
//! where its brk starts.

use crate::error::RunError;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const PAGE: u64 = 4096;
/// The kernel's ELF_ET_DYN_BASE on x86-64: where position-independent programs are placed.
const ET_DYN_BASE: u64 = 0x5555_5555_4000;
/// Pages of randomisation the kernel applies to it (28 bits).
const ET_DYN_RANDOM_PAGES: u64 = 1 << 28;
/// The kernel randomises the brk start within this many bytes past the image.
const BRK_RANDOM_BYTES: u64 = 32 << 20;
/// Nested `#!` interpreters the kernel follows.
const MAX_SCRIPT_DEPTH: usize = 4;
/// Bytes read from the start of a file for its ELF and program headers or `#!` line; a
/// shorter head is the whole file.
const HEAD_BYTES: usize = 8192;
/// The end of the user address space on x86-64 (4-level paging).
const USER_END: u64 = 1 << 47;
/// Longest PT_INTERP path (the kernel's PATH_MAX).
const MAX_INTERP: u64 = 4096;

/// An ELF file mapped into memory.
#[derive(Debug, Clone)]
pub struct Image {
    /// The file.
    pub path: PathBuf,
    /// Difference between run-time and link-time addresses.
    pub bias: u64,
    /// Run-time entry point.
    pub entry: u64,
    /// Run-time address of the program headers.
    pub phdr: u64,
    /// Number of program headers.
    pub phnum: u64,
    /// First address past the highest segment (page-aligned).
    pub end: u64,
    /// The executable segments, at run-time addresses.
    pub code: Vec<Range<u64>>,
    /// The run-time address range the image spans.
    pub span: Range<u64>,
    /// Where the kernel would say its code and data are.
    pub layout: CodeAndData,
}

/// The code and data bounds the kernel records for a program it executes (`/proc/PID/stat`
/// startcode, endcode, startdata, enddata; `VmExe` in `status`): the lowest start and
/// highest file end of the executable segments, the highest start and file end of all.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodeAndData {
    /// Start of the code.
    pub start_code: u64,
    /// End of the code.
    pub end_code: u64,
    /// Start of the data.
    pub start_data: u64,
    /// End of the data.
    pub end_data: u64,
}

/// A program ready to start: its image, its interpreter's and the arguments it gets.
#[derive(Debug)]
pub struct Loaded {
    /// The program (for a script, the script's interpreter).
    pub program: Image,
    /// The ELF interpreter, if the program has one.
    pub interp: Option<Image>,
    /// The argument vector the program sees.
    pub argv: Vec<CString>,
    /// The name it was executed by (AT_EXECFN).
    pub execfn: CString,
    /// Where the program's brk starts.
    pub brk: u64,
}

/// Finds, checks and maps `command[0]` with its interpreter, as `execve(command)` would.
/// `argv0` replaces the program's `argv[0]` when given.
pub fn load(command: &[OsString], argv0: Option<&OsStr>) -> Result<Loaded, RunError> {
    let name = command.first().ok_or_else(|| RunError::NotFound(String::new()))?;
    let mut path = find_program(name)?;
    let execfn = cstring(path.as_os_str());
    let mut argv: Vec<CString> = command.iter().map(|a| cstring(a)).collect();
    if let Some(a0) = argv0 {
        argv[0] = cstring(a0);
    }
    for _ in 0..=MAX_SCRIPT_DEPTH {
        let head = read_head(&path)?;
        if head.starts_with(b"#!") {
            let (interp, arg) = parse_shebang(&head);
            let mut new = vec![cstring(interp.as_os_str())];
            new.extend(arg.map(|a| cstring(OsStr::from_bytes(&a))));
            new.push(cstring(path.as_os_str()));
            new.extend(argv.drain(1..));
            argv = new;
            path = interp;
            continue;
        }
        let program = map_elf(&path, &head, true)?;
        let interp = match read_interp(&path, &head)? {
            Some(ip) => {
                let ihead = read_head(&ip).map_err(|e| match e {
                    RunError::NotFound(_) => RunError::MissingInterpreter(path.clone(), ip.clone()),
                    other => other,
                })?;
                Some(map_elf(&ip, &ihead, false)?)
            }
            None => None,
        };
        let brk = program.end + ((random_u64() % BRK_RANDOM_BYTES) & !(PAGE - 1));
        return Ok(Loaded { program, interp, argv, execfn, brk });
    }
    Err(RunError::WrongKind(path, "too many levels of #! interpreters".into()))
}

fn cstring(s: &OsStr) -> CString {
    // Command-line arguments and file names cannot contain NUL bytes.
    CString::new(s.as_bytes()).expect("argument without NUL bytes")
}

/// What `execve(path)` would do with a file before replacing the process: the errno it fails
/// with, or whether the engine runs the program (`false`: an ELF file the engine does not run,
/// such as a 32-bit one, which the kernel gets to decide about).
pub fn exec_check(path: &Path) -> Result<bool, i32> {
    let c = cstring(path.as_os_str());
    // SAFETY: access() only reads the NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EACCES));
    }
    let is_file = std::fs::metadata(path).map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))?.is_file();
    if !is_file {
        return Err(libc::EACCES);
    }
    let head = read_head(path).map_err(|_| libc::EACCES)?;
    if head.starts_with(b"#!") {
        return Ok(true);
    }
    match headers(path, &head) {
        Ok(_) => Ok(true),
        Err(RunError::NotElf(_)) => Err(libc::ENOEXEC),
        Err(_) => Ok(false),
    }
}

/// Resolves a program name like `execvp`: names with a slash as given, others on `PATH`.
fn find_program(name: &OsStr) -> Result<PathBuf, RunError> {
    let display = name.to_string_lossy().into_owned();
    if name.is_empty() {
        return Err(RunError::NotFound(display));
    }
    if name.as_bytes().contains(&b'/') {
        let p = PathBuf::from(name);
        check_executable(&p)?;
        return Ok(p);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(name);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e @ RunError::NotExecutable(_)) => denied = denied.or(Some(e)),
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or(RunError::NotFound(display)))
}

fn check_executable(p: &Path) -> Result<(), RunError> {
    let meta = std::fs::metadata(p).map_err(|_| RunError::NotFound(p.display().to_string()))?;
    if !meta.is_file() {
        return Err(RunError::NotExecutable(p.to_path_buf()));
    }
    let c = cstring(p.as_os_str());
    // SAFETY: access() only reads the NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(RunError::NotExecutable(p.to_path_buf()));
    }
    Ok(())
}

/// The first bytes of a file: enough for the ELF and program headers or a `#!` line.
fn read_head(p: &Path) -> Result<Vec<u8>, RunError> {
    let mut f = File::open(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RunError::NotFound(p.display().to_string()),
        _ => RunError::Io(p.to_path_buf(), e),
    })?;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    f.by_ref().take(HEAD_BYTES as u64).read_to_end(&mut head).map_err(|e| RunError::Io(p.to_path_buf(), e))?;
    Ok(head)
}

fn parse_shebang(head: &[u8]) -> (PathBuf, Option<Vec<u8>>) {
    let line = head[2..].split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.trim_ascii();
    let (interp, rest) = match line.iter().position(|b| b.is_ascii_whitespace()) {
        Some(i) => (&line[..i], line[i..].trim_ascii()),
        None => (line, &[][..]),
    };
    (PathBuf::from(OsStr::from_bytes(interp)), (!rest.is_empty()).then(|| rest.to_vec()))
}

struct Headers<'a> {
    header: &'a elf::FileHeader64<Endianness>,
    endian: Endianness,
    phdrs: &'a [elf::ProgramHeader64<Endianness>],
}

fn headers<'a>(path: &Path, head: &'a [u8]) -> Result<Headers<'a>, RunError> {
    if !head.starts_with(b"\x7fELF") {
        return Err(RunError::NotElf(path.to_path_buf()));
    }
    if head.get(4) == Some(&elf::ELFCLASS32) {
        return Err(RunError::Elf32(path.to_path_buf()));
    }
    let bad = |what: &str| RunError::WrongKind(path.to_path_buf(), what.to_string());
    let whole_file = head.len() < HEAD_BYTES;
    if whole_file && head.len() < std::mem::size_of::<elf::FileHeader64<Endianness>>() {
        return Err(RunError::Truncated(path.to_path_buf()));
    }
    let header = elf::FileHeader64::<Endianness>::parse(head).map_err(|_| bad("malformed ELF header"))?;
    let endian = header.endian().map_err(|_| bad("malformed ELF header"))?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(RunError::WrongKind(path.to_path_buf(), format!("built for another architecture (ELF machine {machine}), not x86-64")));
    }
    let kind = header.e_type(endian);
    if kind != elf::ET_EXEC && kind != elf::ET_DYN {
        return Err(RunError::WrongKind(path.to_path_buf(), format!("not an executable (ELF type {kind})")));
    }
    let phentsize = header.e_phentsize(endian) as usize;
    if header.e_phnum(endian) > 0 && phentsize != std::mem::size_of::<elf::ProgramHeader64<Endianness>>() {
        return Err(RunError::InvalidElf(path.to_path_buf(), format!("program header entries of {phentsize} bytes")));
    }
    let phdrs = header.program_headers(endian, head).map_err(|_| {
        let phoff = header.e_phoff(endian);
        let table_end = phoff.checked_add(header.e_phnum(endian) as u64 * phentsize as u64);
        match table_end {
            Some(end) if whole_file && end > head.len() as u64 => RunError::Truncated(path.to_path_buf()),
            None => RunError::InvalidElf(path.to_path_buf(), format!("program header offset {phoff:#x}")),
            Some(_) => bad("program headers beyond the first 8 KiB"),
        }
    })?;
    Ok(Headers { header, endian, phdrs })
}

/// Checks what the kernel would map for `ph` (program header `index`) against the file's
/// `len`: a segment whose bytes end past the end of the file would be mapped past it, and a
/// touch of those pages is a SIGBUS.
fn check_segment(path: &Path, e: Endianness, index: usize, ph: &elf::ProgramHeader64<Endianness>, len: u64) -> Result<(), RunError> {
    let invalid = |what: String| Err(RunError::InvalidElf(path.to_path_buf(), format!("program header {index}: {what}")));
    let (offset, filesz, vaddr, memsz) = (ph.p_offset(e), ph.p_filesz(e), ph.p_vaddr(e), ph.p_memsz(e));
    let Some(file_end) = offset.checked_add(filesz) else { return invalid(format!("file range {offset:#x}+{filesz:#x} overflows")) };
    if ph.p_type(e) == elf::PT_LOAD {
        if filesz > memsz {
            return invalid(format!("file size {filesz:#x} larger than memory size {memsz:#x}"));
        }
        if offset % PAGE != vaddr % PAGE {
            return invalid(format!("offset {offset:#x} and address {vaddr:#x} differ within a page"));
        }
        if vaddr.checked_add(memsz).is_none_or(|end| end > USER_END) {
            return invalid(format!("segment {vaddr:#x}+{memsz:#x} beyond the user address space"));
        }
    }
    if ph.p_type(e) == elf::PT_INTERP && !(2..=MAX_INTERP).contains(&filesz) {
        return invalid(format!("interpreter path of {filesz} bytes"));
    }
    if file_end > len {
        return Err(RunError::Truncated(path.to_path_buf()));
    }
    Ok(())
}

/// The headers of the ELF file at `path`, with every segment checked against the file's size.
fn checked_headers<'a>(path: &Path, head: &'a [u8]) -> Result<Headers<'a>, RunError> {
    let h = headers(path, head)?;
    let len = std::fs::metadata(path).map_err(|e| RunError::Io(path.to_path_buf(), e))?.len();
    for (i, ph) in h.phdrs.iter().enumerate() {
        check_segment(path, h.endian, i, ph, len)?;
    }
    Ok(h)
}

fn read_interp(path: &Path, head: &[u8]) -> Result<Option<PathBuf>, RunError> {
    let h = checked_headers(path, head)?;
    let Some(ph) = h.phdrs.iter().find(|p| p.p_type(h.endian) == elf::PT_INTERP) else { return Ok(None) };
    let f = File::open(path).map_err(|e| RunError::Io(path.to_path_buf(), e))?;
    let mut buf = vec![0u8; ph.p_filesz(h.endian) as usize];
    f.read_exact_at(&mut buf, ph.p_offset(h.endian)).map_err(|e| RunError::Io(path.to_path_buf(), e))?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(Some(PathBuf::from(OsStr::from_bytes(&buf[..end]))))
}

fn prot_of(flags: u32) -> i32 {
    let mut p = 0;
    if flags & elf::PF_R != 0 {
        p |= libc::PROT_READ;
    }
    if flags & elf::PF_W != 0 {
        p |= libc::PROT_WRITE;
    }
    if flags & elf::PF_X != 0 {
        p |= libc::PROT_EXEC;
    }
    p
}

/// Maps every PT_LOAD segment of the ELF file at `path` like the kernel does.
fn map_elf(path: &Path, head: &[u8], is_program: bool) -> Result<Image, RunError> {
    let h = checked_headers(path, head)?;
    let e = h.endian;
    let loads: Vec<_> = h.phdrs.iter().filter(|p| p.p_type(e) == elf::PT_LOAD).collect();
    if loads.is_empty() {
        return Err(RunError::WrongKind(path.to_path_buf(), "no loadable segments".into()));
    }
    let lo = loads.iter().map(|p| p.p_vaddr(e)).min().unwrap_or(0) & !(PAGE - 1);
    let hi = loads.iter().map(|p| p.p_vaddr(e) + p.p_memsz(e)).max().unwrap_or(0).next_multiple_of(PAGE);
    let span = hi - lo;
    let file = File::open(path).map_err(|e| RunError::Io(path.to_path_buf(), e))?;
    let fd = file.as_raw_fd();
    let is_pie = h.header.e_type(e) == elf::ET_DYN;
    let base = reserve(path, lo, span, is_pie, is_program)?;
    let bias = base - lo;
    let mut code = Vec::new();
    let mut layout = CodeAndData { start_code: u64::MAX, ..CodeAndData::default() };
    for p in &loads {
        let vaddr = p.p_vaddr(e) + bias;
        let file_end = vaddr + p.p_filesz(e);
        if p.p_flags(e) & elf::PF_X != 0 {
            layout.start_code = layout.start_code.min(vaddr);
            layout.end_code = layout.end_code.max(file_end);
        }
        layout.start_data = layout.start_data.max(vaddr);
        layout.end_data = layout.end_data.max(file_end);
        let prot = prot_of(p.p_flags(e));
        let page = vaddr & !(PAGE - 1);
        let mem_end = (vaddr + p.p_memsz(e)).next_multiple_of(PAGE);
        let needs_zeroing = p.p_memsz(e) > p.p_filesz(e) && file_end % PAGE != 0;
        if p.p_filesz(e) > 0 {
            let len = file_end.next_multiple_of(PAGE) - page;
            let off = p.p_offset(e) - (vaddr - page);
            let map_prot = if needs_zeroing { prot | libc::PROT_WRITE } else { prot };
            map_fixed(path, page, len, map_prot, fd, off)?;
            if needs_zeroing {
                let tail = (file_end.next_multiple_of(PAGE) - file_end) as usize;
                // SAFETY: the tail of the page we just mapped writable for this purpose.
                unsafe { std::ptr::write_bytes(file_end as *mut u8, 0, tail) };
                if map_prot != prot {
                    // SAFETY: our own fresh mapping.
                    unsafe { libc::mprotect(page as *mut _, len as usize, prot) };
                }
            }
        }
        let anon_start = if p.p_filesz(e) > 0 { file_end.next_multiple_of(PAGE) } else { page };
        if mem_end > anon_start {
            map_fixed(path, anon_start, mem_end - anon_start, prot, -1, 0)?;
        }
        if prot & libc::PROT_EXEC != 0 {
            code.push(page..file_end.max(vaddr + p.p_memsz(e)).next_multiple_of(PAGE));
        }
    }
    let phdr = h
        .phdrs
        .iter()
        .find(|p| p.p_type(e) == elf::PT_PHDR)
        .map(|p| p.p_vaddr(e) + bias)
        .or_else(|| {
            let phoff = h.header.e_phoff(e);
            loads
                .iter()
                .find(|p| (p.p_offset(e)..p.p_offset(e) + p.p_filesz(e)).contains(&phoff))
                .map(|p| p.p_vaddr(e) + bias + phoff - p.p_offset(e))
        })
        .unwrap_or(0);
    Ok(Image {
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        bias,
        entry: h.header.e_entry(e) + bias,
        phdr,
        phnum: h.header.e_phnum(e) as u64,
        end: hi + bias,
        code,
        span: base..base + span,
        layout,
    })
}

/// Reserves the address range of an image: fixed for ET_EXEC, the kernel's randomised
/// ELF_ET_DYN_BASE region for a position-independent program, anywhere (top-down, where
/// the kernel puts interpreters) for a position-independent interpreter.
fn reserve(path: &Path, lo: u64, span: u64, is_pie: bool, is_program: bool) -> Result<u64, RunError> {
    if !is_pie {
        return map_reserve(lo, span, true)
            .ok_or_else(|| RunError::WrongKind(path.to_path_buf(), format!("its fixed address {lo:#x} is taken")));
    }
    if is_program {
        for _ in 0..16 {
            let hint = ET_DYN_BASE + (random_u64() % ET_DYN_RANDOM_PAGES) * PAGE;
            if let Some(a) = map_reserve(hint, span, true) {
                return Ok(a);
            }
        }
    }
    map_reserve(0, span, false).ok_or_else(|| RunError::Sys("mmap(image)", std::io::Error::last_os_error()))
}

fn map_reserve(addr: u64, len: u64, fixed: bool) -> Option<u64> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if fixed { libc::MAP_FIXED_NOREPLACE } else { 0 };
    // SAFETY: an inaccessible reservation that never replaces an existing mapping.
    let p = unsafe { libc::mmap(addr as *mut _, len as usize, libc::PROT_NONE, flags, -1, 0) };
    (p != libc::MAP_FAILED && (!fixed || p as u64 == addr)).then_some(p as u64)
}

fn map_fixed(path: &Path, addr: u64, len: u64, prot: i32, fd: i32, off: u64) -> Result<(), RunError> {
    let flags = libc::MAP_PRIVATE | libc::MAP_FIXED | if fd < 0 { libc::MAP_ANONYMOUS } else { 0 };
    // SAFETY: `addr..addr+len` lies inside the reservation made for this image by `reserve`.
    let p = unsafe { libc::mmap(addr as *mut _, len as usize, prot, flags, fd, off as i64) };
    if p == libc::MAP_FAILED {
        return Err(RunError::Io(path.to_path_buf(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// 8 random bytes from the kernel.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    u64::from_le_bytes(b)
}

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) {
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert_eq!(n, buf.len() as isize, "getrandom failed");
}
