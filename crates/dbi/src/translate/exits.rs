//! The ways out of a fragment: what each exit asks the dispatcher to do, and the exit
//! records that cache code names by address (never freed, from per-thread chunks).

use crate::translate::decode::Unrunnable;
use std::cell::Cell;
use std::mem::MaybeUninit;

/// The kind of indirect branch an indirect exit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// `ret`
    Return,
    /// `call reg|mem`
    Call,
    /// `jmp reg|mem`
    Jump,
}

/// What an exit from the cache asks the dispatcher to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// Continue at a known application address; the exit can be linked.
    Direct {
        /// The application address.
        target: u64,
    },
    /// Run the system call the block stopped at, then continue at `next`.
    Syscall {
        /// Address of the instruction after `syscall`.
        next: u64,
    },
    /// An indirect branch whose target missed in the lookup table.
    Indirect(Branch),
    /// An instruction the engine cannot run.
    Unsupported {
        /// Its application address.
        at: u64,
        /// What it is.
        what: Unrunnable,
    },
    /// A tool's clean call: run it, then resume at the record's `stub` address (the code
    /// right after the call sequence).
    CleanCall {
        /// Index of the call site in the engine's table.
        site: u32,
    },
    /// Entry check of a block from a page written too often: the dispatcher compares the
    /// application's bytes with those the block was built from, and resumes at `stub`.
    Verify,
    /// Entry of a block the engine watches (a fork server's persistent loop): every run of
    /// it enters the dispatcher first, which then resumes at `stub` or sends the thread
    /// elsewhere.
    Watched,
    /// The thread was sent into the dispatcher from a signal handler; it continues at
    /// the application address in the context's `ibl_target`.
    Redirect,
    /// The execution counter of a trace head reached the threshold: the thread continues
    /// at `target`, and the dispatcher records a trace from there.
    TraceHead {
        /// The head.
        target: u64,
    },
    /// The first entry of a thread.
    Start {
        /// Where the thread starts.
        entry: u64,
    },
}

/// One exit of a fragment. Cache code refers to it by address, and a thread may read it
/// after its fragment was reclaimed, so records are never freed: they come from chunks
/// that live as long as the process (48 bytes each, no allocator header).
#[derive(Debug)]
pub struct ExitRecord {
    /// What the exit does.
    pub kind: ExitKind,
    /// Cache address of the start of the fragment's code; the offsets below count from it
    /// (0: none, the start being the lookup prefix, never a field or a stub).
    base: u64,
    /// The fragment it belongs to.
    pub fragment: u32,
    /// Its index among the fragment's exits.
    pub index: u16,
    /// The patchable rel32 field of the jump that leaves through this exit (none when the
    /// exit cannot be linked).
    pub(crate) field: u16,
    /// The exit stub (where the field points while unlinked; for exits that resume, where
    /// the code resumes).
    pub(crate) stub: u16,
    /// For exits to trace heads, which count their executions on the way: the body's rel32
    /// field aimed at the counting stub. Once the head has a trace, this field is aimed at
    /// the trace and the count skipped.
    pub(crate) bypass: u16,
    /// The counting stub (where `bypass` points while the head has no trace).
    pub(crate) count_stub: u16,
    /// The fragment this exit is linked to.
    pub linked: Option<u32>,
}

/// Records per chunk.
const RECORDS_PER_CHUNK: usize = 1024;

const _: () = assert!(std::mem::size_of::<ExitRecord>() == 48);

impl ExitRecord {
    /// A record for the fragment whose code starts at cache address `base`, not yet
    /// attached to it.
    pub fn new(kind: ExitKind, base: u64) -> &'static mut ExitRecord {
        thread_local! {
            static FREE: Cell<&'static mut [MaybeUninit<ExitRecord>]> = const { Cell::new(&mut []) };
        }
        let record = ExitRecord::unattached(kind, base);
        FREE.with(|free| {
            let mut slots = free.take();
            if slots.is_empty() {
                slots = Box::leak(Box::new_uninit_slice(RECORDS_PER_CHUNK));
            }
            let (slot, rest) = slots.split_first_mut().expect("a chunk has room");
            free.set(rest);
            slot.write(record)
        })
    }

    /// A record of no fragment (for the exit a thread starts with or is redirected by).
    pub const fn unattached(kind: ExitKind, base: u64) -> ExitRecord {
        ExitRecord { kind, base, fragment: u32::MAX, index: 0, field: 0, stub: 0, bypass: 0, count_stub: 0, linked: None }
    }

    /// Address of the record, as cache code loads it.
    pub fn address(&self) -> u64 {
        self as *const ExitRecord as u64
    }

    /// Cache address of the patchable rel32 field of the jump leaving through this exit, if
    /// it can be linked.
    pub fn field(&self) -> Option<u64> {
        (self.field != 0).then(|| self.base + self.field as u64)
    }

    /// Cache address of the exit stub (of the code an exit that resumes continues at).
    pub fn stub(&self) -> u64 {
        self.base + self.stub as u64
    }

    /// For an exit that counts the executions of a trace head: the cache addresses of the
    /// body's field aimed at the counting stub and of the counting stub.
    pub fn bypass(&self) -> Option<(u64, u64)> {
        (self.bypass != 0).then(|| (self.base + self.bypass as u64, self.base + self.count_stub as u64))
    }
}

/// An offset into fragment code (fragments are at most 64 KiB: `dispatch` rejects larger).
pub(crate) fn offset16(offset: usize) -> u16 {
    offset as u16
}
