//! Rebuilds the host when a migration is added: `sqlx::migrate!` embeds the files of `migrations/`,
//! but cargo tracks only the files it saw, not a new one in the folder.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
