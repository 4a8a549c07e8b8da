//! Rebuilds when a migration is added or renamed: `embed_migrations!` reads the
//! migration directories at compile time, and cargo tracks only the files it
//! already knew, not new directories (as diesel's documentation recommends).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
