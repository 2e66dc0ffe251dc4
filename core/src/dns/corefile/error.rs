//! Errors and warnings of loading a Corefile, each naming where in which file.

use std::fmt;

pub use super::lexer::Position;

/// Why a Corefile could not be loaded. Every variant but [`CorefileError::Read`] carries the
/// file, line and column of the offending token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorefileError {
    /// The Corefile itself could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The text does not follow the Corefile syntax (braces, quotes, imports, keys).
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: Position,
        /// What is wrong.
        message: String,
    },
    /// A directive names a plugin this server does not know.
    #[error("{at}: unknown plugin \"{name}\"")]
    UnknownPlugin {
        /// Where the directive starts.
        at: Position,
        /// The plugin name as written.
        name: String,
    },
    /// A plugin's block has an option this server does not know.
    #[error("{at}: plugin/{plugin}: unknown option \"{option}\"")]
    UnknownOption {
        /// Where the option starts.
        at: Position,
        /// The plugin whose block it is in.
        plugin: String,
        /// The option as written.
        option: String,
    },
    /// A plugin's arguments or options are invalid.
    #[error("{at}: plugin/{plugin}: {message}")]
    Plugin {
        /// Where the offending token is.
        at: Position,
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}

impl CorefileError {
    /// The position of the problem, when it is inside a file.
    pub fn position(&self) -> Option<&Position> {
        match self {
            CorefileError::Read { .. } => None,
            CorefileError::Syntax { at, .. }
            | CorefileError::UnknownPlugin { at, .. }
            | CorefileError::UnknownOption { at, .. }
            | CorefileError::Plugin { at, .. } => Some(at),
        }
    }
}

/// A warning: something accepted but ignored or changed (logged when the Corefile loads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where.
    pub at: Position,
    /// What was accepted and how it is treated.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}
