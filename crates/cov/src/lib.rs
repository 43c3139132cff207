//! Coverage reports from drcov files (rewire's or DynamoRIO's): read, merge and write them
//! ([`drcov`]), combine runs as sets ([`algebra`]), attribute covered bytes, instructions and
//! branches to functions ([`report`], on [`intervals`], [`code`] and [`debuginfo`]), map
//! them to source lines through DWARF ([`lines`]), and write lcov ([`lcov`]), HTML
//! ([`html`]), Cobertura XML ([`cobertura`]) and JSON ([`json`]).

#![warn(missing_docs)]

pub mod algebra;
pub mod cobertura;
pub mod code;
pub mod debuginfo;
pub mod drcov;
pub mod html;
pub mod intervals;
pub mod json;
pub mod lcov;
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
    /// A set expression over runs does not parse.
    #[error("bad coverage expression: {0}")]
    Expression(String),
}
