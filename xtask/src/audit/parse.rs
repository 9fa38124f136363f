//! Reading what the audit's tools print, and the source's annotations: each parser a
//! gate relies on, with its unit tests below.

/// The lint levels declared in `[workspace.lints.*]` of a manifest, as
/// `level(group::lint)`.
pub fn deny_set(manifest: &str) -> Vec<String> {
    let mut section = "";
    let mut set = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']);
            continue;
        }
        let Some(group) = section.strip_prefix("workspace.lints.") else { continue };
        if line.starts_with('#') {
            continue;
        }
        if let Some((name, level)) = line.split_once('=') {
            set.push(format!("{}({group}::{})", level.trim().trim_matches('"'), name.trim()));
        }
    }
    set
}

/// The profiles of a manifest that set `panic = "abort"` (where `catch_unwind`
/// would catch nothing).
pub fn abort_profiles(manifest: &str) -> Vec<String> {
    let mut section = "";
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']);
            continue;
        }
        let Some(profile) = section.strip_prefix("profile.") else { continue };
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "panic"
            && value.trim().trim_matches('"') == "abort"
        {
            found.push(profile.to_owned());
        }
    }
    found
}

/// Function names in no_panic's "detected panic in function `name`" link errors,
/// sorted, each once.
pub fn rejected_functions(linker_output: &str) -> Vec<String> {
    let marker = "detected panic in function `";
    let mut names: Vec<String> = linker_output
        .lines()
        .filter_map(|l| l.split_once(marker))
        .filter_map(|(_, rest)| rest.split_once('`').map(|(name, _)| name.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Panics reported anywhere in a test run (the default hook prints "panicked at").
pub fn count_panics(test_output: &str) -> usize {
    test_output.lines().filter(|l| l.contains("panicked at")).count()
}

/// Sums libtest's "test result:" lines into (passed, failed).
pub fn count_tests(test_output: &str) -> (u64, u64) {
    let mut passed = 0u64;
    let mut failed = 0u64;
    for line in test_output.lines().filter(|l| l.starts_with("test result:")) {
        let number_before = |word: &str| -> u64 {
            line.split(';')
                .find(|part| part.trim_end().ends_with(word))
                .and_then(|part| part.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        passed = passed.saturating_add(number_before("passed"));
        failed = failed.saturating_add(number_before("failed"));
    }
    (passed, failed)
}

/// Whether the test `name` passed (`Some(true)`), failed, or did not run (`None`),
/// from libtest's `test NAME ... ok` lines.
pub fn test_outcome(test_output: &str, name: &str) -> Option<bool> {
    let prefix = format!("test {name} ... ");
    test_output.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(|rest| rest.trim() == "ok")
}

/// The date line (`- dated: 2026-08-21`) of the advisory snapshot's SNAPSHOT.md.
pub fn snapshot_date(snapshot_md: &str) -> Option<String> {
    snapshot_md.lines().find_map(|l| l.trim().strip_prefix("- dated:").map(|d| d.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_lints_are_read_with_their_levels() {
        let manifest = "[package]\nname = \"x\"\n[workspace.lints.rust]\nunsafe_code = \"forbid\"\n\
                        [workspace.lints.clippy]\n# a comment = \"deny\"\nunwrap_used = \"deny\"\n[lints]\nworkspace = true\n";
        assert_eq!(deny_set(manifest), ["forbid(rust::unsafe_code)", "deny(clippy::unwrap_used)"]);
    }

    #[test]
    fn profiles_that_abort_on_panic_are_found() {
        let manifest = "[profile.release]\nlto = true\n[profile.tiny]\npanic = \"abort\"\n[package]\npanic = \"abort\"\n";
        assert_eq!(abort_profiles(manifest), ["tiny"]);
        assert!(abort_profiles("[profile.audit]\ninherits = \"release\"\n").is_empty());
    }

    #[test]
    fn rejected_functions_are_read_from_the_linker_s_words() {
        // What rust-lld prints for no_panic's undefined symbols (abridged), twice for one.
        let output = "error: linking with `cc` failed: exit status: 1\n  = note: rust-lld: error: undefined symbol: \n\
                      \x20         \n\x20         ERROR[no-panic]: detected panic in function `publish`\n\
                      \x20         >>> referenced by rooms.rs:120 (src/broker/rooms.rs:120)\n\
                      \x20 rust-lld: error: undefined symbol: \n\x20         ERROR[no-panic]: detected panic in function `handle`\n\
                      \x20 rust-lld: error: undefined symbol: \n\x20         ERROR[no-panic]: detected panic in function `publish`\n";
        assert_eq!(rejected_functions(output), ["handle", "publish"]);
        assert!(rejected_functions("Finished `audit` profile").is_empty());
    }

    #[test]
    fn test_results_are_summed_across_binaries() {
        let output = "running 3 tests\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s\n\
                      test result: FAILED. 10 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n\
                      not a test result: 99 passed; 99 failed\n";
        assert_eq!(count_tests(output), (13, 2));
        assert_eq!(count_tests(""), (0, 0));
    }

    #[test]
    fn panics_are_counted_per_line() {
        let output =
            "thread 'a' (12) panicked at src/x.rs:1:2:\nboom\nthread 'b' (13) panicked at tests/y.rs:3:4:\n";
        assert_eq!(count_panics(output), 2);
        assert_eq!(count_panics("test result: ok. 1 passed; 0 failed"), 0);
    }

    #[test]
    fn one_test_s_outcome_is_read() {
        let output = "test a::b ... ok\ntest a::c ... FAILED\n";
        assert_eq!(test_outcome(output, "a::b"), Some(true));
        assert_eq!(test_outcome(output, "a::c"), Some(false));
        assert_eq!(test_outcome(output, "a::d"), None);
    }

    #[test]
    fn the_snapshot_date_is_read() {
        assert_eq!(
            snapshot_date("# x\n- commit: abc\n- dated:  2026-08-21\n").as_deref(),
            Some("2026-08-21")
        );
        assert_eq!(snapshot_date("nothing"), None);
    }
}
