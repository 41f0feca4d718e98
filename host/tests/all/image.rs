//! The `Dockerfile` cannot be built here (no Docker engine), so it is checked statically: what it
//! copies from the context exists and `.dockerignore` does not leave it out, nor anything the build
//! needs; its tools and images are pinned; it runs as a user that is not root; its healthcheck is an
//! `iotstream health` the CLI parses; its defaults agree with `docker-compose.yml` and the CLI.

use std::path::{Path, PathBuf};

use clap::Parser;
use iotstream::cli::{Cli, Command};

use crate::compose::{compose, environment, get};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Dockerfile's instructions: (keyword, arguments), continuation lines joined, comments out.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("read Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()) {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => joined.push(std::mem::take(&mut current) + line),
        }
    }
    joined
        .into_iter()
        .map(|i| {
            let (keyword, args) = i.split_once(' ').expect("keyword and arguments");
            (keyword.to_uppercase(), args.trim().to_owned())
        })
        .collect()
}

/// `.dockerignore`'s patterns, held to plain names (no globs, no exceptions), so the check below
/// is exact: a path is left out when it is a pattern or lies under one.
fn ignored() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(".dockerignore")).expect("read .dockerignore");
    let patterns: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    for pattern in &patterns {
        assert!(!pattern.contains(['*', '?', '[', '!']), "{pattern:?}: this check handles plain names only");
    }
    patterns
}

fn is_ignored(path: &str, patterns: &[String]) -> bool {
    let path = path.trim_start_matches("./");
    patterns.iter().map(|p| p.trim_matches('/')).any(|p| path == p || path.starts_with(&format!("{p}/")))
}

#[test]
fn what_the_build_copies_is_in_the_context() {
    let patterns = ignored();
    let mut copied = 0;
    for (keyword, args) in instructions() {
        if keyword != "COPY" || args.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().filter(|a| !a.starts_with("--")).collect();
        for source in &parts[..parts.len() - 1] {
            assert!(root().join(source).exists(), "COPY {source}: no such file");
            assert!(source == &"." || !is_ignored(source, &patterns), "COPY {source}: left out by .dockerignore");
            copied += 1;
        }
    }
    assert!(copied >= 2, "the toolchain file and the sources");
    // `COPY . .` must carry everything the build reads: the workspace's members, its lock file and
    // toolchain, the contract and the migrations compiled into the host.
    let manifest: toml::Table =
        std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml").parse().expect("toml");
    let members = manifest["workspace"]["members"].as_array().expect("members");
    let needed = members.iter().map(|m| m.as_str().expect("member").to_owned());
    let files = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "wit", "migrations", ".cargo/config.toml"];
    for path in needed.chain(files.map(str::to_owned)) {
        assert!(root().join(&path).exists() && !is_ignored(&path, &patterns), "the build needs {path}");
    }
    // What must stay out: build outputs (the image builds its own) and local secrets.
    for path in ["target", "dist", ".git", ".env"] {
        assert!(is_ignored(path, &patterns), "{path} is sent to the build");
    }
}

#[test]
fn tools_and_images_are_pinned() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let bindgen = lock.split("\n[[package]]\n").find(|p| p.starts_with("name = \"wasm-bindgen\"\n")).expect("in lock");
    let bindgen = bindgen.lines().nth(1).and_then(|l| l.strip_prefix("version = ")).expect("version").trim_matches('"');
    for (keyword, args) in instructions() {
        if keyword == "FROM" {
            let image = args.split_whitespace().next().expect("image");
            assert!(image == "toolchain" || image.contains(':') && !image.ends_with(":latest"), "FROM {image}");
        }
        for install in args.split("&&").filter(|c| c.contains("cargo install")) {
            assert!(install.contains("--version"), "unpinned: {install}");
            if install.contains("wasm-bindgen-cli") {
                assert!(install.contains(&format!("--version {bindgen}")), "{install} against Cargo.lock's {bindgen}");
            }
        }
    }
}

#[test]
fn the_image_runs_unprivileged_with_a_healthcheck_and_the_compose_defaults() {
    let instructions = instructions();
    // The last stage is what ships.
    let last_from = instructions.iter().rposition(|(k, _)| k == "FROM").expect("FROM");
    let shipped = &instructions[last_from..];
    let user = shipped.iter().rfind(|(k, _)| k == "USER").map(|(_, u)| u.as_str());
    assert!(user.is_some_and(|u| u != "root" && u != "0"), "the image runs as {user:?}");
    let healthcheck = shipped.iter().find(|(k, _)| k == "HEALTHCHECK").map(|(_, a)| a.clone()).expect("HEALTHCHECK");
    let command = healthcheck.split_once("CMD ").expect("CMD").1;
    let argv: Vec<String> = serde_json::from_str(command).expect("exec form");
    let parsed = Cli::try_parse_from(&argv).map(|cli| matches!(cli.command, Command::Health(_)));
    assert!(matches!(parsed, Ok(true)), "{argv:?}: {:?}", parsed.err());
    // The image's defaults are the ones docker-compose.yml gives the host.
    let env = shipped.iter().filter(|(k, _)| k == "ENV").flat_map(|(_, a)| a.split_whitespace()).collect::<Vec<_>>();
    let service = environment(&compose()["services"]["iotstream"]);
    for key in ["IOTSTREAM_BUILTIN_PLUGINS", "IOTSTREAM_PLUGINS", "IOTSTREAM_DASHBOARD", "IOTSTREAM_LISTEN"] {
        assert!(env.contains(&format!("{key}={}", get(&service, key)).as_str()), "{key}: {env:?}");
    }
    let listen: std::net::SocketAddr = get(&service, "IOTSTREAM_LISTEN").parse().expect("listen");
    assert!(shipped.contains(&("EXPOSE".to_owned(), listen.port().to_string())));
    // The built plugins are copied where IOTSTREAM_BUILTIN_PLUGINS says, and the dashboard where
    // IOTSTREAM_DASHBOARD says.
    for (built, key) in
        [("/src/dist/plugins", "IOTSTREAM_BUILTIN_PLUGINS"), ("/src/dist/dashboard", "IOTSTREAM_DASHBOARD")]
    {
        let copy = format!("{built} {}", get(&service, key));
        assert!(shipped.iter().any(|(k, a)| k == "COPY" && a.ends_with(&copy)), "no COPY ... {copy}");
    }
    // The drop-in folder is created empty (nothing is copied into it) and owned by the host's user:
    // the compose volume on it starts so, and plugins dropped in are written by that user.
    let dropin = get(&service, "IOTSTREAM_PLUGINS");
    assert!(!shipped.iter().any(|(k, a)| k == "COPY" && a.ends_with(&format!(" {dropin}"))), "{dropin} is filled");
    let user = user.unwrap_or_default();
    let created = format!("install -d -o {user} -g {user} -m 0755 {dropin}");
    assert!(shipped.iter().any(|(k, a)| k == "RUN" && a.contains(&created)), "no `{created}`");
}
