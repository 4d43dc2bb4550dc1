//! Configuration errors: each one names the file, and where it can, the line,
//! column and dotted key of the fault.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file was read but its contents are not a valid configuration.
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

impl ConfigError {
    /// The process exit code that `sysexits.h` assigns to this error:
    /// 66 (`EX_NOINPUT`) for a file that cannot be read, 64 (`EX_USAGE`) for
    /// one whose contents are wrong.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Read { .. } => 66,
            ConfigError::Invalid(_) => 64,
        }
    }
}

/// One invalid value or structure in a configuration file.
#[derive(Debug, thiserror::Error)]
pub struct Invalid {
    /// The file the fault is in.
    pub file: PathBuf,
    /// 1-based line and column of the fault, when the parser could locate it.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `upstreams.api.backends[1]`.
    pub key: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Turns byte spans into line/column positions for one source file.
pub(crate) struct Locator<'a> {
    file: &'a Path,
    source: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a Path, source: &'a str) -> Self {
        Self { file, source }
    }

    /// An error at `span` (if known) for `key`.
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Invalid {
        Invalid {
            file: self.file.to_path_buf(),
            position: span.map(|span| self.line_column(span.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        // A span from the parser always falls on a char boundary; be lenient anyway.
        let before = self.source.get(..offset).unwrap_or(self.source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let source = "a = 1\nbé = \"x\"\n";
        let locator = Locator::new(Path::new("f.toml"), source);
        let offset = source.find('"').expect("quote in source");
        let err = locator.error(Some(offset..offset + 3), "bé", "bad");
        assert_eq!(err.position, Some((2, 6)));
        assert_eq!(err.to_string(), "f.toml:2:6: bé: bad");
    }

    #[test]
    fn unknown_position_is_left_out_rather_than_invented() {
        let locator = Locator::new(Path::new("f.toml"), "");
        let err = locator.error(None, "", "empty");
        assert_eq!(err.to_string(), "f.toml: empty");
    }
}
