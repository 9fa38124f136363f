//! What the audit reads from the source: the functions carrying the `no_panic`
//! attribute, found in `src/`, never listed by hand.

use crate::project::Project;

/// The attribute that marks a proven function.
pub const NO_PANIC_ATTR: &str = "no_panic::no_panic";

/// One `no_panic`-annotated function in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotated {
    /// `file:line` of its `fn`, relative to the workspace root.
    pub location: String,
    pub name: String,
}

/// Every function in `src/` carrying the no_panic attribute.
pub fn annotated_functions(project: &Project) -> Vec<Annotated> {
    let mut found = Vec::new();
    for file in project.rust_files("src") {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (line, name) in annotated_in(&text) {
            found.push(Annotated { location: format!("{}:{line}", project.rel(&file)), name });
        }
    }
    found
}

/// The annotated functions of one file: (1-based line of the `fn`, name).
fn annotated_in(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut pending = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[") && trimmed.contains(NO_PANIC_ATTR) {
            pending = true;
            continue;
        }
        if pending && !trimmed.starts_with("#[") {
            if let Some(name) = fn_name(trimmed) {
                found.push((i.saturating_add(1), name.to_owned()));
            }
            pending = false;
        }
    }
    found
}

/// The name in a line such as `pub(crate) fn leave(&mut self, ...)`.
fn fn_name(line: &str) -> Option<&str> {
    let after = line.split_once("fn ")?.1;
    let end = after.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    after.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotated_functions_are_found_past_other_attributes() {
        let text = "fn plain() {}\n\
                    #[cfg_attr(feature = \"no-panic\", no_panic::no_panic)]\n\
                    #[inline]\n\
                    pub(crate) fn leave(&mut self, id: ConnId) -> Option<Left> {\n\
                    }\n\
                    #[cfg_attr(feature = \"no-panic\", no_panic::no_panic)]\n\
                    fn handle<'a>(x: &'a u8) {}\n";
        assert_eq!(annotated_in(text), [(4, "leave".to_owned()), (7, "handle".to_owned())]);
    }
}
