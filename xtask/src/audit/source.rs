//! What the audit reads from the source, parsed as Rust: every function in `src/`
//! outside tests, whether it carries the `no_panic` attribute, where its body opens
//! (for the canaries), and what it calls, inside or outside `contained(...)`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::visit::Visit;

use crate::project::Project;

/// The function through which proven code runs what the proof cannot see into.
pub const CONTAINED: &str = "contained";

/// One function of the source.
#[derive(Debug, Clone)]
pub struct Function {
    /// The name, as the linker's no_panic errors give it.
    pub name: String,
    /// The module path and, for a method, its type: `broker::rooms::Rooms`.
    pub owner: String,
    /// The type of a method's `impl` block.
    pub impl_type: Option<String>,
    /// The file, relative to the workspace root.
    pub file: String,
    /// The line of `fn`.
    pub line: usize,
    /// Where its body's `{` is: line (1-based) and column (in characters, 0-based).
    pub body_open: (usize, usize),
    /// Carries `no_panic` (possibly through `cfg_attr`).
    pub annotated: bool,
    /// What it calls.
    pub calls: Vec<Call>,
}

impl Function {
    /// `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// `Type::name` for a method, `module::name` for a free function.
    pub fn display(&self) -> String {
        match &self.impl_type {
            Some(t) => format!("{t}::{}", self.name),
            None => format!("{}::{}", self.owner, self.name),
        }
    }
}

/// One call in a function's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// How it is written: `make_room`, `Arc::clone`, `Self::caught`, `rooms.join`
    /// (the receiver's last name, then the method), `.is_err` (a method on a
    /// temporary), `debug!` (a macro).
    pub name: String,
    pub line: usize,
    /// The line of the `contained(...)` it sits in, if it does.
    pub contained_at: Option<usize>,
}

/// Every function of `src/` outside tests.
pub fn functions(project: &Project) -> anyhow::Result<Vec<Function>> {
    let parsed = parse_all(project)?;
    let tests = test_modules(&parsed);
    let mut found = Vec::new();
    for (file, module, ast) in &parsed {
        if in_test_module(module, &tests) {
            continue;
        }
        let mut collector =
            Collector { file: project.rel(file), module: module.clone(), impl_type: None, found: &mut found };
        collector.items(&ast.items);
    }
    Ok(found)
}

/// The files of `src/` (relative to the root) that are test modules, declared
/// `#[cfg(test)] mod x;` in their parent. Empty if the source cannot be parsed.
pub fn test_files(project: &Project) -> BTreeSet<String> {
    let Ok(parsed) = parse_all(project) else { return BTreeSet::new() };
    let tests = test_modules(&parsed);
    parsed
        .iter()
        .filter(|(_, module, _)| in_test_module(module, &tests))
        .map(|(file, _, _)| project.rel(file))
        .collect()
}

/// Every file of `src/`, parsed, with its module path.
fn parse_all(project: &Project) -> anyhow::Result<Vec<(PathBuf, String, syn::File)>> {
    let mut parsed = Vec::new();
    for file in project.rust_files("src") {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("cannot parse {}", file.display()))?;
        let module = module_of(&project.join("src"), &file);
        parsed.push((file, module, ast));
    }
    Ok(parsed)
}

/// Modules declared `#[cfg(test)] mod x;`: test code, wherever their file is.
fn test_modules(parsed: &[(PathBuf, String, syn::File)]) -> BTreeSet<String> {
    let mut tests = BTreeSet::new();
    for (_, module, ast) in parsed {
        for item in &ast.items {
            if let syn::Item::Mod(m) = item
                && is_test(&m.attrs)
            {
                tests.insert(join(module, &m.ident.to_string()));
            }
        }
    }
    tests
}

fn in_test_module(module: &str, tests: &BTreeSet<String>) -> bool {
    tests.iter().any(|t| module == t || module.starts_with(&format!("{t}::")))
}

/// The module path of a file under `src/`: `src/broker/rooms.rs` is `broker::rooms`,
/// `src/lib.rs` is `crate`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod" && p != "lib" && p != "main")
        .collect();
    if parts.is_empty() { "crate".to_owned() } else { parts.join("::") }
}

fn join(module: &str, name: &str) -> String {
    if module == "crate" { name.to_owned() } else { format!("{module}::{name}") }
}

/// `#[cfg(test)]` or `#[test]`, alone or among others.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let text = tokens(a);
        text == "#[test]" || text.starts_with("#[cfg(test") || text.contains("tokio::test")
    })
}

/// Carries `no_panic::no_panic`, directly or through `cfg_attr`.
fn is_annotated(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| tokens(a).contains("no_panic::no_panic"))
}

/// An attribute's tokens without spaces.
fn tokens(attr: &syn::Attribute) -> String {
    quote_free(attr).chars().filter(|c| !c.is_whitespace()).collect()
}

fn quote_free(attr: &syn::Attribute) -> String {
    attr.to_token_stream().to_string()
}

/// Walks items, recording functions.
struct Collector<'a> {
    file: String,
    module: String,
    impl_type: Option<String>,
    found: &'a mut Vec<Function>,
}

impl Collector<'_> {
    fn items(&mut self, items: &[syn::Item]) {
        for item in items {
            match item {
                syn::Item::Fn(f) if !is_test(&f.attrs) => self.function(&f.sig, &f.block, &f.attrs),
                syn::Item::Impl(i) if !is_test(&i.attrs) => {
                    let saved = self.impl_type.replace(type_name(&i.self_ty));
                    for impl_item in &i.items {
                        if let syn::ImplItem::Fn(f) = impl_item
                            && !is_test(&f.attrs)
                        {
                            self.function(&f.sig, &f.block, &f.attrs);
                        }
                    }
                    self.impl_type = saved;
                }
                syn::Item::Mod(m) if !is_test(&m.attrs) => {
                    if let Some((_, inner)) = &m.content {
                        let inner_module = join(&self.module, &m.ident.to_string());
                        let saved = std::mem::replace(&mut self.module, inner_module);
                        self.items(inner);
                        self.module = saved;
                    }
                }
                _ => {}
            }
        }
    }

    fn function(&mut self, sig: &syn::Signature, block: &syn::Block, attrs: &[syn::Attribute]) {
        let open = block.brace_token.span.open().start();
        let mut calls = CallVisitor { calls: Vec::new(), contained_at: None };
        calls.visit_block(block);
        let owner = match &self.impl_type {
            Some(t) => join(&self.module, t),
            None => self.module.clone(),
        };
        self.found.push(Function {
            name: sig.ident.to_string(),
            owner,
            impl_type: self.impl_type.clone(),
            file: self.file.clone(),
            line: sig.fn_token.span.start().line,
            body_open: (open.line, open.column),
            annotated: is_annotated(attrs),
            calls: calls.calls,
        });
    }
}

/// The last segment of a type's path: `Rooms` for `Rooms` or `self::rooms::Rooms<'a>`.
fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default(),
        other => other.to_token_stream().to_string(),
    }
}

/// Records the calls in a body, skipping statements marked `#[cfg(test)]`.
struct CallVisitor {
    calls: Vec<Call>,
    /// While inside the closure passed to `contained(...)`: that call's line.
    contained_at: Option<usize>,
}

impl CallVisitor {
    fn record(&mut self, name: String, span: proc_macro2::Span) {
        self.calls.push(Call { name, line: span.start().line, contained_at: self.contained_at });
    }
}

impl<'ast> Visit<'ast> for CallVisitor {
    fn visit_stmt(&mut self, stmt: &'ast syn::Stmt) {
        let attrs: &[syn::Attribute] = match stmt {
            syn::Stmt::Local(l) => &l.attrs,
            syn::Stmt::Expr(e, _) => expr_attrs(e),
            syn::Stmt::Macro(m) => &m.attrs,
            syn::Stmt::Item(_) => &[],
        };
        if !is_test(attrs) {
            syn::visit::visit_stmt(self, stmt);
        }
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        let name = match &*call.func {
            syn::Expr::Path(p) => path_name(&p.path),
            _ => String::new(),
        };
        if name.is_empty() {
            syn::visit::visit_expr_call(self, call);
            return;
        }
        self.record(name.clone(), call.span());
        if name == CONTAINED || name.ends_with(&format!("::{CONTAINED}")) {
            let saved = self.contained_at.replace(call.span().start().line);
            for arg in &call.args {
                self.visit_expr(arg);
            }
            self.contained_at = saved;
        } else {
            syn::visit::visit_expr_call(self, call);
        }
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let receiver = receiver_name(&call.receiver);
        self.record(format!("{receiver}.{}", call.method), call.method.span());
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last() {
            self.record(format!("{}!", last.ident), mac.span());
        }
    }
}

fn expr_attrs(expr: &syn::Expr) -> &[syn::Attribute] {
    match expr {
        syn::Expr::If(e) => &e.attrs,
        syn::Expr::Call(e) => &e.attrs,
        syn::Expr::MethodCall(e) => &e.attrs,
        syn::Expr::Block(e) => &e.attrs,
        syn::Expr::Macro(e) => &e.attrs,
        syn::Expr::Match(e) => &e.attrs,
        _ => &[],
    }
}

/// `a::b::c` as written.
fn path_name(path: &syn::Path) -> String {
    path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::")
}

/// The last name of a method call's receiver: `outbox_tx` for `member.outbox_tx`,
/// `self` for `self`, empty for a temporary.
fn receiver_name(expr: &syn::Expr) -> String {
    match expr {
        syn::Expr::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default(),
        syn::Expr::Field(f) => match &f.member {
            syn::Member::Named(ident) => ident.to_string(),
            syn::Member::Unnamed(index) => index.index.to_string(),
        },
        syn::Expr::Reference(r) => receiver_name(&r.expr),
        syn::Expr::Paren(p) => receiver_name(&p.expr),
        syn::Expr::Unary(u) => receiver_name(&u.expr),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Function> {
        let ast = syn::parse_file(text).unwrap();
        let mut found = Vec::new();
        let mut collector = Collector {
            file: "src/x.rs".to_owned(),
            module: "x".to_owned(),
            impl_type: None,
            found: &mut found,
        };
        collector.items(&ast.items);
        found
    }

    #[test]
    fn functions_annotations_bodies_and_calls_are_read() {
        let text = "fn plain() { helper(); }\n\
                    impl Rooms {\n\
                    \x20   #[cfg_attr(feature = \"no-panic\", no_panic::no_panic)]\n\
                    \x20   #[inline]\n\
                    \x20   pub(crate) fn leave(&mut self, id: u64) {\n\
                    \x20       let x = contained(|| removed.reserve(1));\n\
                    \x20       self.finish(); tracing::debug!(\"x\"); Self::caught(x).is_none();\n\
                    \x20       #[cfg(test)]\n\
                    \x20       if boom { std::panic::panic_any(1) }\n\
                    \x20   }\n\
                    }\n\
                    #[cfg(test)]\n\
                    mod tests { fn hidden() {} }\n";
        let found = parse(text);
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["plain", "leave"], "test modules are not read");
        let leave = &found[1];
        assert!(leave.annotated && !found[0].annotated);
        assert_eq!((leave.line, leave.body_open), (5, (5, 44)));
        assert_eq!(leave.display(), "Rooms::leave");
        let calls: Vec<(&str, Option<usize>)> =
            leave.calls.iter().map(|c| (c.name.as_str(), c.contained_at)).collect();
        assert_eq!(
            calls,
            [
                ("contained", None),
                ("removed.reserve", Some(6)),
                ("self.finish", None),
                ("debug!", None),
                (".is_none", None),
                ("Self::caught", None),
            ],
            "calls inside contained(...) are marked; #[cfg(test)] statements are skipped"
        );
    }

    #[test]
    fn a_file_s_module_path_follows_its_place() {
        let src = Path::new("/w/src");
        assert_eq!(module_of(src, Path::new("/w/src/lib.rs")), "crate");
        assert_eq!(module_of(src, Path::new("/w/src/broker.rs")), "broker");
        assert_eq!(module_of(src, Path::new("/w/src/broker/rooms.rs")), "broker::rooms");
        assert_eq!(module_of(src, Path::new("/w/src/x/mod.rs")), "x");
    }
}
