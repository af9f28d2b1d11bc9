//! Warnings plugins find in their own config (an OpenAPI operation whose body is not validated,
//! an `x-internal` property that can leak): printed by `validate`, and logged each time a
//! snapshot is applied (at start and on every reload) so a running gateway shows them too.

use std::fmt;

use portcullis_config::Lint;
use tracing::warn;

/// A warning one plugin instance found in its config.
#[derive(Debug, Clone)]
pub struct PluginLint {
    /// The plugin's name (`openapi`).
    pub plugin: String,
    /// The route it is configured on; `None` for a global plugin.
    pub route: Option<String>,
    /// The finding, placed in the config file.
    pub lint: Lint,
}

impl fmt::Display for PluginLint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.lint.fmt(f)
    }
}

/// Logs each lint once, as a warning with its plugin, route, policy and config position.
pub fn log(lints: &[PluginLint]) {
    for l in lints {
        let e = &l.lint.error;
        let mut at = e
            .file
            .as_ref()
            .map_or_else(|| "<config>".to_owned(), |f| f.display().to_string());
        if let Some(p) = e.pos {
            at = format!("{at}:{}:{}", p.line, p.col);
        }
        match &l.route {
            Some(route) => warn!(
                plugin = %l.plugin,
                route = %route,
                policy = %l.lint.policy,
                field = %e.path,
                at = %at,
                "plugin config warning: {}",
                e.message
            ),
            None => warn!(
                plugin = %l.plugin,
                scope = "global",
                policy = %l.lint.policy,
                field = %e.path,
                at = %at,
                "plugin config warning: {}",
                e.message
            ),
        }
    }
}
