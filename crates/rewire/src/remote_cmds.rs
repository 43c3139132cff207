//! `rewire inject` and `rewire launch`: hooks in another process.

use anyhow::Context;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use rewire_hook::remote::{Record, RemoteProcess};
use rewire_hook::Process;
use rewire_hook::{Interceptor, Sharing};
use std::sync::Arc;

/// Parses `SYMBOL=LIB_SYMBOL`.
pub fn parse_hook(spec: &str) -> Result<(String, String), String> {
    match spec.split_once('=') {
        Some((t, d)) if !t.is_empty() && !d.is_empty() => Ok((t.to_string(), d.to_string())),
        _ => Err(format!("expected SYMBOL=LIB_SYMBOL, got {spec:?}")),
    }
}

/// A hook to place: symbol, library symbol, target, detour, the `rewire_orig_` cell.
type Resolved<'a> = (&'a str, &'a str, u64, u64, Option<u64>);

/// Loads `lib` into the process and sets each hook; the original of each goes to the
/// library's `rewire_orig_<LIB_SYMBOL>` before the hook is enabled. All hooks or none: when a
/// symbol is missing or a hook is refused, nothing is hooked and the library is unloaded.
fn apply(process: &Arc<RemoteProcess>, lib: &str, hooks: &[(String, String)]) -> anyhow::Result<()> {
    let pid = process.pid();
    let base = process.inject(lib)?;
    eprintln!("rewire: loaded {lib} at {base:#x} in process {pid}");
    let interceptor = Interceptor::for_process(process.clone(), Sharing::Shared);
    let calls_before = process.kernel_calls();
    let placed = resolve(process, lib, hooks).and_then(|resolved| {
        let mut tx = interceptor.transaction();
        for &(_, _, target, detour, _) in &resolved {
            // SAFETY: the user vouches that LIB_SYMBOL has SYMBOL's signature; every thread
            // of the target is stopped.
            unsafe { tx.hook_disabled(target, detour) };
        }
        let names: Vec<&str> = resolved.iter().map(|r| r.0).collect();
        // One transaction: every hook is placed, or none.
        let set =
            if resolved.is_empty() { Vec::new() } else { tx.commit().with_context(|| format!("cannot hook {}", names.join(", ")))? };
        Ok((resolved, set))
    });
    let (resolved, set) = match placed {
        Ok(placed) => placed,
        Err(e) => {
            return Err(match process.unload(lib) {
                Ok(()) => e.context(format!("nothing hooked; {lib} unloaded from process {pid}")),
                Err(u) => e.context(format!("nothing hooked; {lib} stays loaded in process {pid}: {u}")),
            });
        }
    };
    // The hooks are in place (disabled): from here on the library stays.
    let mut records = process.hooks_placed()?;
    for (hook, &(symbol, lib_symbol, target, detour, original_cell)) in set.into_iter().zip(&resolved) {
        match original_cell {
            Some(cell) => process.write_u64(cell, hook.trampoline())?,
            None => eprintln!("rewire: warning: {lib} has no rewire_orig_{lib_symbol}: {lib_symbol} cannot call the original {symbol}"),
        }
        hook.enable()?;
        let site = interceptor.site(target).expect("just hooked");
        let mut patch = vec![0u8; site.patch_len];
        process.memory().read(target, &mut patch)?;
        records.retain(|r| r.target != target);
        records.push(Record::of(&site, patch, detour));
        hook.leak();
        eprintln!("rewire: hooked {symbol} at {target:#x} with {lib_symbol}");
    }
    process.set_hooks_placed(&records)?;
    if !hooks.is_empty() {
        eprintln!("rewire: {} hook(s) set with {} system calls on the process", hooks.len(), process.kernel_calls() - calls_before);
    }
    if interceptor.threads_moved() > 0 {
        eprintln!("rewire: moved {} thread(s) out of the bytes patched", interceptor.threads_moved());
    }
    Ok(())
}

/// Every hook's target, detour and `rewire_orig_` cell, before any is placed.
fn resolve<'a>(process: &RemoteProcess, lib: &str, hooks: &'a [(String, String)]) -> anyhow::Result<Vec<Resolved<'a>>> {
    let lib_path = std::fs::canonicalize(lib)?.to_string_lossy().into_owned();
    hooks
        .iter()
        .map(|(symbol, lib_symbol)| {
            let target = process.find_function(symbol)?;
            let detour = process.symbol(&lib_path, lib_symbol)?;
            let original_cell = process.symbol(&lib_path, &format!("rewire_orig_{lib_symbol}")).ok();
            Ok((symbol.as_str(), lib_symbol.as_str(), target, detour, original_cell))
        })
        .collect()
}

/// `rewire inject --pid PID LIB [--hook S=L ...]`.
pub fn inject(pid: i32, lib: &str, hooks: &[(String, String)]) -> anyhow::Result<u8> {
    let process = RemoteProcess::attach(pid)?;
    let outcome = apply(&process, lib, hooks);
    process.detach();
    outcome.map(|()| 0)
}

/// `rewire launch --inject LIB [--hook S=L ...] -- PROGRAM ARGS`: the program's exit status
/// (or terminating signal) becomes rewire's.
pub fn launch(lib: &str, hooks: &[(String, String)], command: &[String]) -> anyhow::Result<u8> {
    let process = RemoteProcess::launch(&command[0], command)?;
    let child = Pid::from_raw(process.pid());
    if let Err(e) = apply(&process, lib, hooks) {
        let _ = signal::kill(child, Signal::SIGKILL);
        process.detach();
        let _ = waitpid(child, None);
        return Err(e);
    }
    process.detach();
    // Keyboard signals go to the whole process group: let the program decide what they do.
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: ignoring a signal installs no handler code.
        unsafe { signal::signal(sig, SigHandler::SigIgn) }?;
    }
    loop {
        match waitpid(child, None)? {
            WaitStatus::Exited(_, code) => return Ok(code as u8),
            WaitStatus::Signaled(_, sig, _) => {
                // Die the way the program died.
                // SAFETY: restoring the default action before raising it.
                unsafe { signal::signal(sig, SigHandler::SigDfl) }?;
                signal::raise(sig)?;
                return Ok(128 + sig as u8);
            }
            _ => continue,
        }
    }
}

/// `rewire unhook --pid PID [SYMBOL...]`: removes hooks rewire placed (all, or those on the
/// named functions), restoring the original bytes.
pub fn unhook(pid: i32, symbols: &[String]) -> anyhow::Result<u8> {
    let process = RemoteProcess::attach(pid)?;
    let outcome = (|| -> anyhow::Result<Vec<u64>> {
        let targets = symbols.iter().map(|s| process.find_function(s)).collect::<Result<Vec<u64>, _>>()?;
        let placed: Vec<u64> = process.hooks_placed()?.iter().map(|r| r.target).collect();
        if let Some((symbol, _)) = symbols.iter().zip(&targets).find(|(_, t)| !placed.contains(t)) {
            anyhow::bail!("rewire placed no hook on {symbol} in process {pid}");
        }
        Ok(process.unhook(&targets)?)
    })();
    process.detach();
    let restored = outcome?;
    for t in &restored {
        eprintln!("rewire: restored the original code at {t:#x}");
    }
    eprintln!("rewire: removed {} hook(s) from process {pid}", restored.len());
    Ok(0)
}
