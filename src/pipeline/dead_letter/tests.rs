use super::*;
use crate::record::{SpanRecord, SpanStatus};

fn req(spans: u8) -> ExportTraceServiceRequest {
    let spans = (0..spans)
        .map(|i| {
            crate::otlp::to_span(&SpanRecord {
                trace_id: [i + 1; 16],
                span_id: [i + 1; 8],
                parent_span_id: None,
                name: "Completions".into(),
                start_unix_nano: 1,
                end_unix_nano: 2,
                status: SpanStatus::Ok,
                attributes: vec![],
                events: vec![],
            })
        })
        .collect();
    crate::otlp::request("svc", spans)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn writes_reason_spans_and_request() {
    let dir = tempfile::tempdir().unwrap();
    let dl = DeadLetter::new(dir.path().join("dl"), 64 << 20, 10);
    assert_eq!(
        dl.write("mlflow", "HTTP 400: bad", &req(2)).await.unwrap(),
        0
    );
    dl.write("mlflow", "HTTP 404: no experiment", &req(1))
        .await
        .unwrap();
    let lines = lines(&dl.path());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["reason"], "HTTP 400: bad");
    assert_eq!(lines[0]["spans"], 2);
    assert_eq!(lines[1]["sink"], "mlflow");
    assert!(lines[0]["request"]["resourceSpans"].is_array());
}

#[tokio::test]
async fn rotates_by_size_keeps_max_files_and_counts_what_it_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let dl = DeadLetter::new(dir.path().to_path_buf(), 1, 3);
    let mut deleted = 0;
    for _ in 0..5 {
        deleted += dl.write("mlflow", "HTTP 400", &req(2)).await.unwrap();
    }
    // Five one-line files were made; the two oldest went, two spans each.
    assert_eq!(deleted, 4);
    let rotated = rotated_files(dir.path()).unwrap();
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    for f in rotated.iter().chain([&dl.path()]) {
        assert_eq!(lines(f).len(), 1, "{}", f.display());
    }
}

#[tokio::test]
async fn a_file_stays_under_its_cap_unless_one_line_is_larger() {
    let dir = tempfile::tempdir().unwrap();
    let one = line("mlflow", "HTTP 400", &req(1)).len() as u64;
    let dl = DeadLetter::new(dir.path().to_path_buf(), 3 * one + one / 2, 10);
    for _ in 0..7 {
        dl.write("mlflow", "HTTP 400", &req(1)).await.unwrap();
    }
    let rotated = rotated_files(dir.path()).unwrap();
    let sizes: Vec<usize> = rotated.iter().map(|f| lines(f).len()).collect();
    assert_eq!(sizes, vec![3, 3]);
    assert_eq!(lines(&dl.path()).len(), 1);
}

#[test]
fn lines_from_before_the_spans_field_are_counted_from_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.jsonl");
    let req = serde_json::to_string(&req(3)).unwrap();
    fs::write(
        &f,
        format!("{{\"reason\":\"x\",\"request\":{req}}}\nnot json\n"),
    )
    .unwrap();
    assert_eq!(count_spans(&f), 3);
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_0600_in_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dl = DeadLetter::new(tmp.path().join("dl"), 1, 3);
    for _ in 0..2 {
        dl.write("file", "x", &req(1)).await.unwrap();
    }
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp.path().join("dl")), 0o700);
    for f in fs::read_dir(tmp.path().join("dl")).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
}
