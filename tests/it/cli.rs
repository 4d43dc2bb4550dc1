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
            "CONFIG:10:31: upstreams.app.backends[1]: \"127.0.0.1:99999\" has no valid port (1-65535)",
        ),
        (
            VALID.replace("name = \"main\"", "name = \"main\"\nbacklog = 5"),
            "CONFIG:3:1: listeners[0].backlog: unknown field `backlog`, expected one of `name`, `address`, `max_connections`, `tls`",
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
        (
            format!("{VALID}\n[admin]\naddress = \"localhost:9901\"\n"),
            "CONFIG:13:11: admin.address: \"localhost:9901\" is not a socket address",
        ),
        (
            format!("{VALID}\n[admin]\nwindow = \"100ms\"\n"),
            "CONFIG:13:10: admin.window: must be at least 1s: the window moves in steps of a sixth of it",
        ),
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

#[test]
fn an_admin_address_in_use_stops_start_up_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tailcut.toml");
    let config = VALID.replace("127.0.0.1:8080", "127.0.0.1:0") + &format!("\n[admin]\naddress = \"{address}\"\n");
    std::fs::write(&path, config).expect("write config");
    let output = Command::new(Kind::Tailcut.binary())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run tailcut");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("listener admin: cannot bind {address}")),
        "{stderr}"
    );
}
