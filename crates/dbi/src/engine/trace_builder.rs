//! Hot traces, next-executing-tail style: exits to trace heads (targets of backward
//! branches, and every exit of a trace) count their executions in the cache; when a count
//! reaches the threshold the thread records the blocks it runs next, one recording copy at
//! a time through the dispatcher, and the sequence is stitched into one trace fragment that
//! replaces the head's block.

use crate::arch::context::ThreadCtx;
use crate::cache::FragId;
use crate::engine::state::{Engine, NoFragment};
use crate::engine::traces::{Recording, MAX_TRACE_APP_BYTES};
use crate::tool::TraceView;
use crate::translate::ExitKind;

/// Why recording stops before `next`.
fn ends_before(eng: &mut Engine, rec: &Recording, exit: &ExitKind, next: u64) -> bool {
    let last = *rec.tags.last().expect("a recording holds its head");
    let backward = matches!(exit, ExitKind::Direct { target } if *target <= last);
    !matches!(exit, ExitKind::Direct { .. } | ExitKind::Indirect(_))
        || backward
        || next == rec.tags[0]
        || eng.frags.is_trace(next)
        || rec.tags.len() >= eng.opts.traces.max_blocks as usize
        || rec.app_bytes >= MAX_TRACE_APP_BYTES
        || eng.code_writes.must_verify(next..next + 1)
        || eng.watched.contains(&next)
        || eng.tool.end_trace_before(&TraceView { head: rec.tags[0], blocks: &rec.tags }, next)
}

/// The dispatcher's trace work for a thread about to continue at `next` after `exit`
/// (`diverted` when a signal handler runs first). Returns the recording copy to run when
/// the thread is recording, `None` to continue normally.
pub fn step(eng: &mut Engine, ctx: &ThreadCtx, exit: &ExitKind, next: u64, diverted: bool) -> Option<FragId> {
    if !eng.opts.traces.enabled || eng.opts.no_link {
        return None;
    }
    let me = ctx as *const ThreadCtx as u64;
    if let Some(rec) = eng.recordings.remove(&me) {
        if diverted {
            eng.trace_stats.aborted += 1;
        } else if ends_before(eng, &rec, exit, next) {
            install(eng, rec);
        } else {
            return record(eng, me, rec, next);
        }
        return None;
    }
    if let ExitKind::TraceHead { target } = *exit {
        eng.trace_stats.hot_heads += 1;
        let watched = eng.watched.contains(&target);
        if !diverted && !watched && !eng.frags.is_trace(target) && !eng.code_writes.must_verify(target..target + 1) {
            return record(eng, me, Recording { tags: Vec::new(), app_bytes: 0 }, target);
        }
    }
    None
}

/// Adds `next` to the recording and returns its recording copy.
fn record(eng: &mut Engine, me: u64, mut rec: Recording, next: u64) -> Option<FragId> {
    let copy = match eng.recording_copy(next) {
        Ok(id) => id,
        Err(_) => {
            eng.trace_stats.aborted += 1;
            if !rec.tags.is_empty() {
                install(eng, rec);
            }
            return None;
        }
    };
    rec.app_bytes += eng.frags.get(copy).app_len;
    rec.tags.push(next);
    eng.recordings.insert(me, rec);
    Some(copy)
}

/// Builds the recorded trace and puts it in place of its head's block.
fn install(eng: &mut Engine, rec: Recording) {
    match eng.build_trace(&rec.tags) {
        Ok(id) => {
            eng.trace_stats.built += 1;
            eng.trace_stats.blocks += rec.tags.len() as u64;
            let entry = eng.frags.get(id).lookup_entry();
            for &c in &eng.contexts {
                // SAFETY: registered contexts are live; only the target half of a matching
                // slot is replaced, by an entry that is valid as well.
                unsafe { &mut *(c as *mut ThreadCtx) }.ibl_retarget(rec.tags[0], entry);
            }
            eng.tool.on_trace(&TraceView { head: rec.tags[0], blocks: &rec.tags });
        }
        Err(NoFragment::NotExecutable | NoFragment::CacheFull(_)) => eng.trace_stats.aborted += 1,
    }
}
