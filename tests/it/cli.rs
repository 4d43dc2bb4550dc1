//! The command line: `check` prints the effective config; bad configs give
//! their exact message and exit code.

use std::process::Command;

use crate::support::Kind;

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).expect("write");
    let output = Command::new(Kind::Tailcut.binary())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run tailcut");
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "CONFIG");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

const VALID: &str = r#"[[listeners]]
name = "main"
address = "127.0.0.1:8080"

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
backends = ["127.0.0.1:9000"]
"#;

#[test]
fn check_prints_the_effective_config_and_exits_zero() {
    let (code, stdout, stderr) = check(VALID);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("[timeouts]\nconnect = \"1s\""), "{stdout}");
    assert!(stdout.contains("address = \"127.0.0.1:8080\""), "{stdout}");
}

#[test]
fn each_invalid_config_gives_its_exact_message_and_exit_64() {
    let cases = [
        (
            VALID.replace("9000\"]", "9000\", \"127.0.0.1:99999\"]"),
            "CONFIG:10:31: upstreams.app.backends[1]: \"127.0.0.1:99999\" is not a socket address",
        ),
        (
            VALID.replace("name = \"main\"", "name = \"main\"\nbacklog = 5"),
            "CONFIG:3:1: listeners[0].backlog: unknown field `backlog`, expected one of `name`, `address`, `max_connections`",
        ),
        (
            format!("[timeouts]\nconnect = \"fast\"\n{VALID}"),
            "CONFIG:2:11: timeouts.connect: \"fast\" is not a duration; write e.g. \"250ms\", \"10s\", \"2m\"",
        ),
        (
            VALID.replace("upstream = \"app\"", "upstream = \"missing\""),
            "CONFIG:7:12: routes[0].upstream: no upstream named \"missing\" is defined",
        ),
        (
            format!("[limits]\nmax_connections_per_listener = 0\n{VALID}"),
            "CONFIG:2:32: limits.max_connections_per_listener: must be greater than zero",
        ),
        ("[[routes]\n".to_owned(), "CONFIG:1:9: invalid table header; expected `.`, `]]`"),
    ];
    for (config, expected) in cases {
        let (code, _, stderr) = check(&config);
        assert_eq!(
            stderr.trim_end(),
            format!("tailcut: {expected}"),
            "for config:\n{config}"
        );
        assert_eq!(code, 64, "for config:\n{config}");
    }
}

#[test]
fn a_missing_config_file_exits_66() {
    let output = Command::new(Kind::Tailcut.binary())
        .args(["run", "--config", "/nonexistent/tailcut.toml"])
        .output()
        .expect("run tailcut");
    assert_eq!(output.status.code(), Some(66));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("tailcut: /nonexistent/tailcut.toml: cannot read config: No such file or directory"),
        "{stderr}"
    );
}
