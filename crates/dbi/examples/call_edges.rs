//! A tool of your own around rewire's engine, in a few lines: it counts the calls a program
//! executes (an inline per-thread counter before every `call`) and collects the distinct
//! edges of indirect calls through a register (a clean call receiving the call's address and
//! the register's value).
//!
//! ```sh
//! cargo run --release -p rewire-dbi --example call_edges -- /usr/bin/python3.11 -c 'print(1)'
//! ```

use iced_x86::{FlowControl, Mnemonic, OpKind};
use rewire_dbi::tool::{Arg, BlockView, Counter, Finish, Instrument, Tool};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct CallEdges {
    calls: Option<Counter>,
    edges: Arc<Mutex<HashSet<(u64, u64)>>>,
}

impl Tool for CallEdges {
    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        for (i, insn) in block.insns.iter().enumerate() {
            if insn.mnemonic() != Mnemonic::Call {
                continue;
            }
            if self.calls.is_none() {
                self.calls = instrument.new_counter();
            }
            if let Some(c) = self.calls {
                instrument.count_before(i, c, 1);
            }
            if insn.flow_control() == FlowControl::IndirectCall && insn.op0_kind() == OpKind::Register {
                let edges = Arc::clone(&self.edges);
                let record = move |args: &[u64]| {
                    edges.lock().unwrap().insert((args[0], args[1]));
                };
                instrument.clean_call(i, Arc::new(record), vec![Arg::AppPc, Arg::Reg(insn.op0_register())]);
            }
        }
    }

    fn on_exit(&mut self, finish: &Finish<'_>) {
        let calls = self.calls.map_or(0, |c| finish.total(c));
        let edges = self.edges.lock().unwrap().len();
        finish.output.report(&[format!("calls: {calls}"), format!("indirect call edges through registers: {edges}")]);
    }
}

fn main() {
    let command = std::env::args_os().skip(1).collect();
    let opts = rewire_dbi::Options { command, ..Default::default() };
    match rewire_dbi::run_tool(Box::new(CallEdges::default()), opts) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("call_edges: {e}");
            std::process::exit(126);
        }
    }
}
