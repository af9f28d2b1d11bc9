//! `google.api.http` path templates of `grpc_transcode` (`/v1/{name=shelves/*}:cancel`): the
//! input is a template, a newline, and a request path. Parsing never panics; a parsed template
//! prints back to text that parses to the same template; matching never panics and yields one
//! value per variable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_plugins::transcode::template::Template;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, "/"));
    let Ok(t) = Template::parse(template) else {
        return;
    };
    let again = Template::parse(&t.display()).expect("a printed template parses");
    assert_eq!(again, t, "printing changed the template `{template}`");
    if let Some(vars) = t.matches(path) {
        assert_eq!(vars.len(), t.vars.len());
    }
});
