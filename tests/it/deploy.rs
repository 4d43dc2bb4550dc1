//! The deployment files under `deploy/`, checked offline: the systemd unit
//! with `systemd-analyze verify`, the Kubernetes manifests against the
//! API's schemas with `kubernetes-validate --strict`, the container config
//! with `tailcut check`, and the Dockerfile's build step against the one CI
//! runs. Each validator is also shown a broken copy, to prove it can fail.
//!
//! The validators come from Debian's `systemd` and PyPI's
//! `kubernetes-validate`; `.ci/run` installs both. Without one, its test
//! says so and passes, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `program`'s path, or `None` (a failure under CI) when it is missing.
fn tool(program: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing and CI is set: .ci/run installs {package}"
        );
        eprintln!("skipped: {program} is not installed ({package})");
    }
    found
}

fn run(program: &Path, args: &[&Path]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{}: {err}", program.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// systemd-analyze exits 0 on unknown keys and only warns, so a clean unit
/// is one that verifies with no output at all.
#[test]
fn the_systemd_unit_verifies_cleanly() {
    let Some(analyze) = tool("systemd-analyze", "Debian's systemd") else {
        return;
    };
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/tailcut.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/tailcut run"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // verify checks that ExecStart's program exists: point it at this build.
    let unit = unit.replace("/usr/local/bin/tailcut", env!("CARGO_BIN_EXE_tailcut"));
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("tailcut.service");
    std::fs::write(&good, &unit).expect("write unit");
    let output = run(&analyze, &[Path::new("verify"), &good]);
    assert!(
        output.status.success() && text(&output).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&output)
    );

    let broken = dir.path().join("broken.service");
    std::fs::write(&broken, unit.replace("ProtectSystem=", "ProtectSystm=")).expect("write unit");
    let output = run(&analyze, &[Path::new("verify"), &broken]);
    assert!(
        text(&output).contains("Unknown key 'ProtectSystm'"),
        "{}",
        text(&output)
    );
}

#[test]
fn the_kubernetes_manifests_match_the_api_schemas() {
    let Some(validate) = tool("kubernetes-validate", "pip install kubernetes-validate") else {
        return;
    };
    let dir = repo().join("deploy/k8s");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    let kinds: Vec<String> = manifests
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("manifest");
            text.lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let mut args: Vec<&Path> = vec![Path::new("--strict")];
    args.extend(manifests.iter().map(PathBuf::as_path));
    let output = run(&validate, &args);
    assert!(output.status.success(), "kubernetes-validate:\n{}", text(&output));
    assert_eq!(
        text(&output).matches(" passed for resource ").count(),
        manifests.len(),
        "{}",
        text(&output)
    );

    let scratch = tempfile::tempdir().expect("temp dir");
    let broken = scratch.path().join("deployment.yaml");
    let deployment = std::fs::read_to_string(dir.join("deployment.yaml")).expect("deployment");
    std::fs::write(&broken, deployment.replace("  replicas: 2", "  replica: 2")).expect("write");
    let output = run(&validate, &[Path::new("--strict"), &broken]);
    assert!(!output.status.success(), "a misspelt field passed:\n{}", text(&output));
}

/// The container's config is valid, and the ConfigMap carries the same file.
#[test]
fn the_container_config_checks_and_the_configmap_carries_it() {
    let config = repo().join("deploy/config/tailcut.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_tailcut"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run tailcut check");
    assert!(output.status.success(), "tailcut check:\n{}", text(&output));

    let file = std::fs::read_to_string(&config).expect("config");
    let map = std::fs::read_to_string(repo().join("deploy/k8s/configmap.yaml")).expect("configmap");
    let (_, block) = map.split_once("  tailcut.toml: |\n").expect("tailcut.toml key");
    let carried: String = block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        carried, file,
        "configmap.yaml's tailcut.toml differs from deploy/config/tailcut.toml"
    );
}

/// A green CI means the image's build step compiles: CI runs the same command.
#[test]
fn the_dockerfile_builds_with_the_command_ci_runs() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let build = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("RUN cargo build"))
        .expect("a RUN cargo build step");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.contains(&format!("cargo build{build}")),
        ".ci/run does not run `cargo build{build}`"
    );
    assert!(dockerfile.contains("USER nonroot"), "the image runs as root");
    assert!(
        dockerfile.contains("--profile release-small"),
        "not the size-tuned binary"
    );
}
