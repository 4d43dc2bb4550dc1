//! The binaries compared: building them (or taking the ones given), their
//! sizes, and, when asked, the wall time of a clean build of each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{setup, CompareError};

/// One binary's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinarySize {
    /// What it is: `tailcut (speed profile)`, `tailcut (size profile)`,
    /// `goproxy (-ldflags="-s -w")`.
    pub name: String,
    /// Its path.
    pub path: String,
    /// Bytes on disk.
    pub bytes: u64,
}

/// One clean build's wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildTime {
    /// `tailcut` or `goproxy`.
    pub proxy: String,
    /// The command timed.
    pub command: String,
    /// Wall-clock seconds, from an empty build cache and target folder
    /// (downloaded sources are kept: neither build fetches anything).
    pub seconds: f64,
}

/// The binaries a comparison runs, and what was measured about them.
#[derive(Debug)]
pub struct Binaries {
    /// The tailcut that runs.
    pub tailcut: PathBuf,
    /// The Go proxy that runs.
    pub goproxy: PathBuf,
    /// Every binary's size.
    pub sizes: Vec<BinarySize>,
    /// Clean build times, when measured.
    pub build_times: Vec<BuildTime>,
}

/// Finds or builds both proxies. Builds tailcut in its speed profile (the
/// one that runs) and its size profile (`release-small`, measured only),
/// and the Go proxy stripped, as its README builds it. With `clean`, first
/// times a clean build of each in a fresh folder under `out`.
pub fn prepare(
    tailcut: Option<&Path>,
    goproxy: Option<&Path>,
    out: &Path,
    clean: bool,
) -> Result<Binaries, CompareError> {
    let mut build_times = Vec::new();
    if clean {
        build_times = clean_builds(out)?;
    }
    let mut sizes = Vec::new();
    let tailcut = match tailcut {
        Some(path) => path.to_path_buf(),
        None => {
            let small = cargo_build("release-small", None)?;
            sizes.push(size_of("tailcut (size profile: release-small)", &small));
            cargo_build("release", None)?
        }
    };
    sizes.insert(0, size_of("tailcut (speed profile, the one that runs)", &tailcut));
    let goproxy = match goproxy {
        Some(path) => path.to_path_buf(),
        None => go_build(&out.join("goproxy"), None)?,
    };
    sizes.push(size_of("goproxy (-ldflags=\"-s -w\", the one that runs)", &goproxy));
    Ok(Binaries {
        tailcut,
        goproxy,
        sizes,
        build_times,
    })
}

/// The workspace root (this crate lives in `loadtest/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn size_of(name: &str, path: &Path) -> BinarySize {
    BinarySize {
        name: name.to_owned(),
        path: path.display().to_string(),
        bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

/// `cargo build --profile PROFILE --bin tailcut`, into `target_dir` if given.
fn cargo_build(profile: &str, target_dir: Option<&Path>) -> Result<PathBuf, CompareError> {
    let command = format!("cargo build --locked --profile {profile} --bin tailcut");
    eprintln!("building tailcut ({command})");
    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--locked", "--quiet", "--profile", profile, "--bin", "tailcut"])
        .current_dir(workspace());
    if let Some(dir) = target_dir {
        cargo.env("CARGO_TARGET_DIR", dir);
    }
    let status = cargo.status().map_err(setup(command.clone()))?;
    if !status.success() {
        return Err(CompareError::Setup(format!("{command} failed")));
    }
    let target = target_dir.map_or_else(|| workspace().join("target"), Path::to_path_buf);
    Ok(target.join(profile).join("tailcut"))
}

/// `go build -trimpath -ldflags="-s -w" -o binary .` in `loadtest/goproxy`,
/// with `cache` as the build cache if given.
fn go_build(binary: &Path, cache: Option<&Path>) -> Result<PathBuf, CompareError> {
    eprintln!("building the Go proxy (go build -trimpath -ldflags=\"-s -w\")");
    let mut go = Command::new("go");
    go.args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
        .arg(binary)
        .arg(".")
        .current_dir(workspace().join("loadtest/goproxy"));
    if let Some(dir) = cache {
        go.env("GOCACHE", dir);
    }
    let status = go.status().map_err(setup("go (install Go 1.24 or newer)"))?;
    if !status.success() {
        return Err(CompareError::Setup("go build of the Go proxy failed".into()));
    }
    Ok(binary.to_path_buf())
}

/// Times a clean build of each proxy: tailcut's speed profile into an
/// empty target folder, the Go proxy with an empty build cache. Both use
/// every CPU; sources already downloaded (cargo's registry, Go's module
/// cache) are kept, so neither build measures the network.
fn clean_builds(out: &Path) -> Result<Vec<BuildTime>, CompareError> {
    let root = out.join("clean-build");
    let fresh = |dir: &Path| {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(setup(dir.display().to_string()))
    };
    let target = root.join("cargo-target");
    fresh(&target)?;
    let started = Instant::now();
    cargo_build("release", Some(&target))?;
    let tailcut = started.elapsed().as_secs_f64();
    let cache = root.join("go-cache");
    fresh(&cache)?;
    let started = Instant::now();
    go_build(&root.join("goproxy"), Some(&cache))?;
    let goproxy = started.elapsed().as_secs_f64();
    // The copies are large and only their build time mattered.
    let _ = std::fs::remove_dir_all(&root);
    Ok(vec![
        BuildTime {
            proxy: "tailcut".into(),
            command: "cargo build --release --bin tailcut (empty target folder)".into(),
            seconds: tailcut,
        },
        BuildTime {
            proxy: "goproxy".into(),
            command: "go build -trimpath -ldflags=\"-s -w\" (empty GOCACHE)".into(),
            seconds: goproxy,
        },
    ])
}
