//! Config errors: each names where in the file it was found and which field it is about.

use std::fmt;
use std::path::PathBuf;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl Pos {
    /// A position from a 1-based line and column.
    pub fn new(line: usize, col: usize) -> Self {
        Self { line, col }
    }
}

/// One problem in a config: where it is, the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// Position in the file, when known.
    pub pos: Option<Pos>,
    /// Field path such as `routes[2].match.path_prefix`; empty for the whole document.
    pub path: String,
    /// What is wrong, and where useful, what would be right.
    pub message: String,
}

impl ConfigError {
    /// An error about `path`, position to be filled in from the source map.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            pos: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error at a known position.
    pub fn at(pos: Pos, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pos: Some(pos),
            ..Self::new(path, message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:", file.display())?,
            None => f.write_str("<config>:")?,
        }
        if let Some(p) = self.pos {
            write!(f, "{}:{}:", p.line, p.col)?;
        }
        f.write_str(" ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config; loading reports them all at once.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// How serious a lint finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks `validate` and a reload.
    Error,
    /// Printed, does not block.
    Warning,
}

/// A finding of a lint policy.
#[derive(Debug, Clone)]
pub struct Lint {
    /// Error or warning.
    pub severity: Severity,
    /// Short name of the policy, e.g. `shadowed-route`.
    pub policy: &'static str,
    /// Where and what.
    pub error: ConfigError,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // FILE:LINE:COL: warning[policy]: path: message
        let e = &self.error;
        match &e.file {
            Some(file) => write!(f, "{}:", file.display())?,
            None => f.write_str("<config>:")?,
        }
        if let Some(p) = e.pos {
            write!(f, "{}:{}:", p.line, p.col)?;
        }
        write!(f, " {sev}[{}]: ", self.policy)?;
        if !e.path.is_empty() {
            write!(f, "{}: ", e.path)?;
        }
        f.write_str(&e.message)
    }
}
