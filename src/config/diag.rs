//! Config diagnostics: every problem found while loading is a [`Diagnostic`] pinned to
//! `file:line:col`, collected (never thrown) so one `validate` run reports all of them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One loaded config file: its text is kept so byte spans can be turned into line:col.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    /// Byte offset of the start of each line, for span → line:col.
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..offset].chars().count() + 1;
        (line + 1, col)
    }

    pub fn diagnostic(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.position(span.start);
        Diagnostic {
            file: self.path.clone(),
            line,
            col,
            message: one_line(message.into()),
        }
    }
}

/// A message as one line of text: values quoted from the config (a name with a newline, an
/// escape sequence) cannot split a problem over lines or drive the terminal.
fn one_line(message: String) -> String {
    if !message.chars().any(char::is_control) {
        return message;
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A config problem at a precise place. Messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Diagnostic {
    /// A problem that belongs to a whole file (unreadable, glob matched nothing).
    pub fn file_level(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
            message: one_line(message.into()),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// The error of a failed load: every diagnostic, in file order.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = SourceFile::new("a.toml", "x = 1\né = \"y\"\n".to_string());
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(4), (1, 5));
        assert_eq!(src.position(6), (2, 1));
        // "é" is two bytes but one column.
        assert_eq!(src.position(9), (2, 3));
        let d = src.diagnostic(6..7, "bad");
        assert_eq!(d.to_string(), "a.toml:2:1: bad");
    }

    #[test]
    fn a_message_quoting_a_newline_stays_on_one_line() {
        let src = SourceFile::new("a.toml", "x = 1\n".to_string());
        let d = src.diagnostic(0..1, "unknown observation ` 7\n\u{1b}[31m`");
        assert_eq!(
            d.to_string(),
            "a.toml:1:1: unknown observation ` 7\\n\\u{1b}[31m`"
        );
    }
}
