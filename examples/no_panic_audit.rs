//! Links every `no_panic`-annotated function of wsbroker into one binary, so that the
//! audit build checks them all: `cargo build --profile audit --features no-panic
//! --example no_panic_audit`. Run by `cargo xtask audit`.

fn main() {
    wsbroker::audit::link_all();
    println!("no_panic audit binary linked and ran");
}
