//! The Go proxy's own checks, so that the project's one test command covers
//! its Go code too: gofmt, go vet, its unit tests, and its config errors.

use std::process::{Command, Output};

use crate::support::proxy::go_source;
use crate::support::Kind;

/// Runs `program args` in the Go proxy's folder.
fn go_tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(go_source())
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run `{program}` ({err}): the Go proxy's checks need Go 1.24 or newer on PATH")
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn go_sources_are_gofmt_clean() {
    let output = go_tool("gofmt", &["-l", "."]);
    assert!(output.status.success(), "gofmt failed: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "", "files gofmt would change");
}

#[test]
fn go_vet_is_clean() {
    let output = go_tool("go", &["vet", "./..."]);
    assert!(output.status.success(), "go vet:\n{}", text(&output.stderr));
}

#[test]
fn go_unit_tests_pass() {
    let output = go_tool("go", &["test", "-count=1", "./..."]);
    assert!(
        output.status.success(),
        "go test:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn a_bad_config_exits_64_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:99999\"\n").expect("write config");
    let output = Command::new(Kind::Go.binary())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run goproxy");
    assert_eq!(output.status.code(), Some(64));
    assert_eq!(
        text(&output.stderr).trim_end(),
        format!(
            "goproxy: {}:3:11: listeners[0].address: \"127.0.0.1:99999\" is not a socket address",
            path.display()
        )
    );
}
