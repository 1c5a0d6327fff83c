//! Builds the XDP object that the daemon embeds, with the same recipe as `cargo xtask build-ebpf`.

#[path = "../sbc-ebpf/build_recipe.rs"]
mod recipe;

use std::path::{Path, PathBuf};

/// What goes into the XDP object: a change to any of it rebuilds the object.
const SOURCES: &[&str] = &["sbc-ebpf", "sbc-common", "Cargo.toml", "Cargo.lock"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("sbc-userspace lives in the workspace root");
    for source in SOURCES {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(source).display()
        );
    }
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    match recipe::build(workspace, Path::new(&cargo)) {
        Ok(object) => println!("cargo:rustc-env=SBC_XDP_OBJECT={}", object.display()),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
