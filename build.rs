//! `TREASURYD_TEST_POSTGRES=skip` when the tests are built marks every PostgreSQL test ignored,
//! so a run without PostgreSQL reports them as ignored, never as passed.

// The daemon's configuration rule (read once, in config.rs) is for the daemon, not its build.
#[allow(clippy::disallowed_methods)]
fn main() {
    println!("cargo::rustc-check-cfg=cfg(treasuryd_skip_postgres)");
    println!("cargo::rerun-if-env-changed=TREASURYD_TEST_POSTGRES");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("TREASURYD_TEST_POSTGRES").is_ok_and(|v| v == "skip") {
        println!("cargo::rustc-cfg=treasuryd_skip_postgres");
    }
}
