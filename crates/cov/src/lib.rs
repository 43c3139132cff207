//! Coverage reports from drcov files (rewire's or DynamoRIO's): read and merge them
//! ([`drcov`]), attribute covered blocks to functions from the ELF symbol tables
//! ([`report`]), and map them to source lines through DWARF for lcov tracefiles and HTML
//! pages ([`lines`]).

#![warn(missing_docs)]

pub mod drcov;
pub mod lines;
pub mod report;

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CovError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A drcov file is malformed.
    #[error("{0}: not a drcov file: {1}")]
    Format(String, String),
}
