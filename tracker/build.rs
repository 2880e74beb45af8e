//! Rebuilds the tracker when a migration is added under `migrations/`: the
//! `migrate!` macro embeds the files it finds, but cargo only watches files
//! it already knows about.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
