//! `--json`, `--hgrm` and `--interval-log` files, and `merge`, read back.

use tailcut_load::histograms::parse_hgrm;
use tailcut_load::result::RunResult;

use crate::support::{backend, tailcut_load};

#[test]
fn outputs_parse_back_and_merge_adds_up() {
    // A valid run needs the generator not to be starved of CPU.
    let _cpu = crate::support::exclusive_cpu();
    let addr = backend(200, "none");
    let url = format!("http://{addr}/");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let loose = [
        "--max-send-lag",
        "200ms",
        "--max-stall",
        "2s",
        "--rate-tolerance",
        "0.2",
    ];

    for (json, extra) in [
        ("a.json", vec!["--hgrm", "a.hgrm"]),
        ("b.json", vec!["--interval-log", "b.hlog"]),
    ] {
        let extra: Vec<String> = extra
            .iter()
            .map(|e| if e.contains('.') { path(e) } else { (*e).to_owned() })
            .collect();
        let mut args = vec![
            "run",
            &url,
            "--rate",
            "300",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "-c",
            "4",
            "--quiet",
        ];
        let json_path = path(json);
        args.extend(["--json", &json_path]);
        args.extend(extra.iter().map(String::as_str));
        args.extend(loose);
        let out = tailcut_load(&args);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }

    let read = |name: &str| std::fs::read_to_string(path(name)).expect("output file");
    let a: RunResult = serde_json::from_str(&read("a.json")).expect("a.json parses");
    let b: RunResult = serde_json::from_str(&read("b.json")).expect("b.json parses");
    let (ha, hb) = (a.decode().expect("a decodes"), b.decode().expect("b decodes"));
    assert_eq!(ha.corrected.len(), 600);

    let (lines, total) = parse_hgrm(&read("a.hgrm")).expect("a.hgrm parses");
    assert_eq!(total, ha.corrected.len());
    assert_eq!(lines.last().map(|l| l.total_count), Some(total));

    // One line per second, each a histogram HdrHistogram's own log reader accepts.
    let log = read("b.hlog");
    let intervals: Vec<_> = hdrhistogram::serialization::interval_log::IntervalLogIterator::new(log.as_bytes())
        .filter_map(|entry| match entry {
            Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(i)) => {
                Some(i.encoded_histogram().to_owned())
            }
            _ => None,
        })
        .collect();
    assert!(intervals.len() >= 2, "{log}");
    let logged: u64 = intervals
        .iter()
        .map(|h| tailcut_load::histograms::decode(h).expect("decodes").len())
        .sum();
    assert_eq!(
        logged,
        hb.corrected.len(),
        "the per-second histograms add up to the run"
    );

    let merged_path = path("merged.json");
    let out = tailcut_load(&["merge", &path("a.json"), &path("b.json"), "--json", &merged_path]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let merged: RunResult = serde_json::from_str(&read("merged.json")).expect("merged parses");
    let mut expected = ha.corrected.clone();
    expected.add(&hb.corrected).expect("same bounds");
    assert_eq!(merged.decode().expect("decodes").corrected, expected);
    assert_eq!(merged.sent, a.sent + b.sent);
    assert_eq!(merged.rate, 600.0);
}
