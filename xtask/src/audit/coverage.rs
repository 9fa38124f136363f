//! How each function the broker task runs is covered, found by following the calls
//! from the broker's entries (`Broker::step` for each command, `Broker::extends_run`
//! and `Broker::publish_run` for runs of publishes) and from `run_hook` (the test
//! hooks): by a proof of its own, within the proof of the function that calls
//! it, or inside `contained(...)`; and which effects each `contained(...)` holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::containment::EFFECTS;
use super::source::{CONTAINED, Call, Function};

/// The broker's proven entry points (what its `async` loop calls), and the test
/// hooks' one.
pub const ROOTS: &[(&str, &str)] =
    &[("Broker", "step"), ("Broker", "extends_run"), ("Broker", "publish_run")];
pub const HOOK_ROOT: (&str, &str) = ("", "run_hook");

/// Receivers whose type the audit knows by name, for resolving method calls.
const RECEIVERS: &[(&str, &str)] = &[
    ("rooms", "Rooms"),
    ("bridge", "BridgeTx"),
    ("broker", "Broker"),
    ("metrics", "Metrics"),
    ("ledger", "Ledger"),
    ("epochs", "Epochs"),
    ("history", "History"),
    ("entries", "Ring"),
    ("order", "Ring"),
    ("replay", "Replay"),
];

/// How a function the broker task runs is covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// It carries `no_panic`: proven on its own.
    OwnProof,
    /// Called outside `contained(...)` from proven code: its code is part of its
    /// caller's proof (if it could unwind, the caller's link would fail).
    WithinProof { caller: String },
    /// Called only inside `contained(...)`, at these places.
    Contained { at: Vec<String> },
    /// Reached only from the test hooks.
    TestHooksOnly,
}

/// One covered function.
#[derive(Debug, Clone)]
pub struct Covered {
    pub function: Function,
    pub how: How,
}

/// One `contained(...)` call reached from the broker's proven code.
#[derive(Debug, Clone)]
pub struct ContainedSite {
    /// `file:line`.
    pub location: String,
    /// The function it is in.
    pub within: String,
    /// The effects in it, each with why it is opaque (`None`: unexplained).
    pub effects: Vec<(String, Option<&'static str>)>,
}

/// Everything the broker task runs, and its contained effects.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    pub covered: Vec<Covered>,
    pub sites: Vec<ContainedSite>,
    /// What `Broker::handle` calls (resolved to functions of the source).
    pub handle_calls: Vec<String>,
    /// Entries of `EFFECTS` that no contained call uses: stale.
    pub stale_effects: Vec<&'static str>,
}

impl Coverage {
    /// Every contained effect has a reason, and every reason an effect.
    pub fn explained(&self) -> bool {
        self.stale_effects.is_empty()
            && self.sites.iter().all(|s| s.effects.iter().all(|(_, why)| why.is_some()))
    }
}

/// Follows the calls from the roots through `functions`.
pub fn analyse(functions: &[Function]) -> Coverage {
    let index = Index { functions };
    let roots: Vec<usize> = ROOTS.iter().filter_map(|(owner, name)| index.find(owner, name)).collect();
    if roots.len() != ROOTS.len() {
        return Coverage::default();
    }
    // (function, reached only through contained code) -> the first way it was reached.
    let mut reached: BTreeMap<(usize, bool), String> = BTreeMap::new();
    let mut queue: VecDeque<(usize, bool, String)> =
        roots.into_iter().map(|root| (root, false, String::new())).collect();
    let mut sites: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    while let Some((f, contained, how)) = queue.pop_front() {
        if reached.contains_key(&(f, contained)) {
            continue;
        }
        reached.insert((f, contained), how);
        let Some(function) = functions.get(f) else { continue };
        for call in &function.calls {
            let inside = contained || call.contained_at.is_some();
            if let (false, Some(at)) = (contained, call.contained_at)
                && call.name != CONTAINED
                && !call.name.starts_with('.')
            {
                sites.entry((f, at)).or_default().insert(call.name.clone());
            }
            if let Some(target) = index.resolve(call, function) {
                let how = if inside {
                    format!("{}:{}", function.file, call.contained_at.unwrap_or(call.line))
                } else {
                    function.display()
                };
                queue.push_back((target, inside, how));
            }
        }
    }
    let hook_only: BTreeSet<usize> = match index.find(HOOK_ROOT.0, HOOK_ROOT.1) {
        Some(hook) => {
            index.reachable(hook).into_iter().filter(|f| !reached.keys().any(|(g, _)| g == f)).collect()
        }
        None => BTreeSet::new(),
    };

    let mut covered = Vec::new();
    let fns: BTreeSet<usize> = reached.keys().map(|(f, _)| *f).chain(hook_only.iter().copied()).collect();
    for f in fns {
        let Some(function) = functions.get(f) else { continue };
        let how = if hook_only.contains(&f) {
            How::TestHooksOnly
        } else if function.annotated {
            How::OwnProof
        } else if let Some(caller) = reached.get(&(f, false)) {
            How::WithinProof { caller: caller.clone() }
        } else {
            let at = reached.iter().filter(|((g, c), _)| *g == f && *c).map(|(_, how)| how.clone()).collect();
            How::Contained { at }
        };
        covered.push(Covered { function: function.clone(), how });
    }
    covered.sort_by(|a, b| {
        (a.function.file.as_str(), a.function.line).cmp(&(b.function.file.as_str(), b.function.line))
    });

    let mut used = BTreeSet::new();
    let sites: Vec<ContainedSite> = sites
        .into_iter()
        .filter_map(|((f, at), names)| {
            let function = functions.get(f)?;
            let effects = names
                .into_iter()
                .map(|name| {
                    let why = EFFECTS.iter().find(|(effect, _)| *effect == name).map(|(_, why)| *why);
                    used.insert(name.clone());
                    (name, why)
                })
                .collect();
            Some(ContainedSite {
                location: format!("{}:{at}", function.file),
                within: function.display(),
                effects,
            })
        })
        .collect();
    let stale_effects = EFFECTS.iter().map(|(e, _)| *e).filter(|e| !used.contains(*e)).collect();
    let handle_calls = index
        .find("Broker", "handle")
        .and_then(|h| functions.get(h))
        .map(|h| {
            let mut calls: Vec<String> = Vec::new();
            for target in
                h.calls.iter().filter(|c| c.contained_at.is_none()).filter_map(|c| index.resolve(c, h))
            {
                if let Some(name) = functions.get(target).map(Function::display)
                    && !calls.contains(&name)
                {
                    calls.push(name);
                }
            }
            calls
        })
        .unwrap_or_default();
    Coverage { covered, sites, handle_calls, stale_effects }
}

/// Looking functions up by how they are called.
struct Index<'a> {
    functions: &'a [Function],
}

impl Index<'_> {
    /// The function `name` of type `ty` (a free function for an empty `ty`).
    fn find(&self, ty: &str, name: &str) -> Option<usize> {
        self.functions.iter().position(|f| f.name == name && f.impl_type.as_deref().unwrap_or("") == ty)
    }

    /// The function a call goes to, if it is one of the source's.
    fn resolve(&self, call: &Call, caller: &Function) -> Option<usize> {
        if let Some((receiver, method)) = call.name.split_once('.') {
            let ty = match receiver {
                "self" => caller.impl_type.clone()?,
                r => RECEIVERS.iter().find(|(name, _)| *name == r)?.1.to_owned(),
            };
            return self.find(&ty, method);
        }
        match call.name.rsplit_once("::") {
            Some((ty, name)) => {
                let ty =
                    if ty == "Self" { caller.impl_type.clone()? } else { ty.rsplit("::").next()?.to_owned() };
                self.find(&ty, name)
            }
            None => {
                // A free function: in the caller's module first, else the one of that name.
                let free = |f: &&Function| f.impl_type.is_none() && f.name == call.name;
                let module = caller.owner.rsplit_once("::").map_or(caller.owner.as_str(), |(m, _)| m);
                let same_module = self
                    .functions
                    .iter()
                    .position(|f| free(&f) && (f.owner == caller.owner || f.owner == module));
                same_module.or_else(|| {
                    let mut all = self.functions.iter().enumerate().filter(|(_, f)| free(f));
                    match (all.next(), all.next()) {
                        (Some((i, _)), None) => Some(i),
                        _ => None,
                    }
                })
            }
        }
    }

    /// Every function reachable from `from`, itself included.
    fn reachable(&self, from: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([from]);
        while let Some(f) = queue.pop_front() {
            if !seen.insert(f) {
                continue;
            }
            let Some(function) = self.functions.get(f) else { continue };
            queue.extend(function.calls.iter().filter_map(|c| self.resolve(c, function)));
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(
        impl_type: Option<&str>,
        name: &str,
        annotated: bool,
        calls: &[(&str, Option<usize>)],
    ) -> Function {
        Function {
            name: name.to_owned(),
            owner: impl_type.map_or("broker".to_owned(), |t| format!("broker::{t}")),
            impl_type: impl_type.map(str::to_owned),
            file: "src/broker.rs".to_owned(),
            line: 1,
            body_open: (1, 0),
            annotated,
            calls: calls
                .iter()
                .map(|(n, at)| Call { name: (*n).to_owned(), line: 1, contained_at: *at })
                .collect(),
        }
    }

    #[test]
    fn each_function_is_covered_by_its_own_proof_its_caller_s_or_containment() {
        let functions = vec![
            function(Some("Broker"), "step", true, &[("self.handle", None)]),
            function(Some("Broker"), "extends_run", true, &[]),
            function(Some("Broker"), "publish_run", true, &[("self.rooms.publish", None)]),
            function(
                Some("Broker"),
                "handle",
                true,
                &[("rooms.publish", None), ("contained", None), ("drop", Some(7)), ("rooms.stats", Some(8))],
            ),
            function(Some("Rooms"), "publish", true, &[("offer", None), ("Self::caught", None)]),
            function(Some("Rooms"), "caught", false, &[]),
            function(None, "offer", false, &[("contained", None), ("outbox_tx.try_send", Some(3))]),
            function(Some("Rooms"), "stats", false, &[]),
            function(Some("Rooms"), "remove_room", false, &[]),
            function(None, "run_hook", false, &[("rooms.remove_room", None), ("broker.handle", None)]),
            function(None, "contained", false, &[]),
        ];
        let coverage = analyse(&functions);
        let how =
            |name: &str| coverage.covered.iter().find(|c| c.function.name == name).map(|c| c.how.clone());
        assert_eq!(how("publish"), Some(How::OwnProof));
        assert_eq!(how("offer"), Some(How::WithinProof { caller: "Rooms::publish".to_owned() }));
        assert_eq!(how("caught"), Some(How::WithinProof { caller: "Rooms::publish".to_owned() }));
        assert_eq!(how("stats"), Some(How::Contained { at: vec!["src/broker.rs:8".to_owned()] }));
        assert_eq!(how("remove_room"), Some(How::TestHooksOnly));
        assert_eq!(coverage.handle_calls, ["Rooms::publish", "broker::contained"], "each once, in order");
        let site = coverage.sites.iter().find(|s| s.within == "broker::offer").unwrap();
        assert_eq!(
            site.effects,
            [(
                "outbox_tx.try_send".to_owned(),
                EFFECTS.iter().find(|e| e.0 == "outbox_tx.try_send").map(|e| e.1)
            )]
        );
        assert!(!coverage.explained(), "most of EFFECTS is unused here, so stale");
    }
}
