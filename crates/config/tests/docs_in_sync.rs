//! Keeps `docs/config.md` in step with the code: every field serde reads from the config file
//! (the `pub` fields of the `Raw*` structs in `src/raw.rs`, under their serde names) must be
//! named in the reference as a backticked name, e.g. `` `max_header_bytes` ``.
//!
//! Why a line-based scan rather than a proc-macro or `syn`: `raw.rs` is written one field per
//! line with its attributes above it, so a few string checks are enough, and the test needs no
//! dependency.

use std::fs;
use std::path::Path;

/// A config field as serde reads it, with the struct that holds it.
#[derive(Debug, PartialEq, Eq)]
struct Field {
    strukt: String,
    name: String,
}

/// The serde names of the `pub` fields of every `Raw*` struct in `source`.
fn raw_fields(source: &str) -> Vec<Field> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut rename: Option<String> = None;
    for line in source.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            current = name.starts_with("Raw").then_some(name);
            rename = None;
        } else if line == "}" {
            current = None;
        } else if current.is_none() {
            continue;
        } else if line.starts_with("#[serde(") {
            rename = serde_rename(line).or(rename);
        } else if let Some((field, _)) = line.strip_prefix("pub ").and_then(|r| r.split_once(':')) {
            let field = field.trim();
            let name = rename
                .take()
                .unwrap_or_else(|| field.trim_start_matches("r#").to_owned());
            out.push(Field {
                strukt: current.clone().unwrap_or_default(),
                name,
            });
        }
    }
    out
}

/// The `x` of `rename = "x"` in a `#[serde(...)]` line (not `rename_all`).
fn serde_rename(attr: &str) -> Option<String> {
    const KEY: &str = "rename = \"";
    let start = attr.find(KEY)? + KEY.len();
    let len = attr[start..].find('"')?;
    Some(attr[start..start + len].to_owned())
}

#[test]
fn the_scan_reads_serde_names() {
    let src = r#"
/// Not a config struct.
pub struct Other {
    pub ignored: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThing {
    /// A field.
    #[serde(default)]
    pub plain: Option<String>,
    /// Renamed.
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    /// A raw identifier.
    pub r#type: String,
}
"#;
    let names: Vec<String> = raw_fields(src).into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["plain", "match", "type"]);
}

#[test]
fn every_config_field_is_in_the_reference() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let raw_path = crate_dir.join("src/raw.rs");
    let docs_path = crate_dir.join("../../docs/config.md");
    let raw = fs::read_to_string(&raw_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", raw_path.display()));
    let docs = fs::read_to_string(&docs_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", docs_path.display()));

    let fields = raw_fields(&raw);
    // Guard against the scan silently finding nothing after a change of layout in raw.rs.
    assert!(
        fields.len() > 50,
        "only {} fields found in {}: has its layout changed?",
        fields.len(),
        raw_path.display()
    );
    assert!(
        fields.iter().any(|f| f.name == "match") && !fields.iter().any(|f| f.name == "matcher"),
        "the scan should read `matcher` under its serde name `match`"
    );

    let missing: Vec<String> = fields
        .iter()
        .filter(|f| !docs.contains(&format!("`{}`", f.name)))
        .map(|f| format!("{}.{}", f.strukt, f.name))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md does not mention these config fields (as `name`); document them:\n  {}",
        missing.join("\n  ")
    );
}
