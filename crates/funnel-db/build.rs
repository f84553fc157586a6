//! `sqlx::migrate!` embeds the migrations at compile time but does not tell cargo to watch the
//! directory: without this, a new migration is missed until something else rebuilds the crate.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
