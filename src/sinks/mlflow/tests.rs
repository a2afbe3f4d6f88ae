//! The MLflow sink's own pieces: what it is named and shows, and the
//! assessment body (mlflow-wire.md §7). Its transport is tested end to end
//! against a real `mlflow server` (tests/export.rs, tests/mlflow_e2e.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use super::config::{ExperimentRef, MlflowAuth, MlflowConfig};
use super::*;

fn cfg(auth: MlflowAuth) -> MlflowConfig {
    MlflowConfig {
        tracking_uri: "https://mlflow.example:5000".into(),
        experiment: ExperimentRef::Name("agents".into()),
        auth,
        server_ca: Default::default(),
        source_metadata: false,
    }
}

#[test]
fn named_and_described_without_its_secret() {
    let auth = MlflowAuth::Basic {
        user: "bob".into(),
        password: "hunter2-secret".into(),
    };
    let ctx = crate::sinks::Context {
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        service_name: "llmtap".into(),
    };
    let sink = build("team", cfg(auth), &ctx).unwrap();
    assert_eq!((sink.name(), sink.kind()), ("team", "mlflow"));
    let shown = sink.describe();
    assert!(shown.contains("https://mlflow.example:5000"), "{shown}");
    assert!(shown.contains("agents"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let debug = format!("{:?}", cfg(MlflowAuth::Bearer("tok-secret".into())));
    assert!(!debug.contains("tok-secret"), "{debug}");
}

#[test]
fn an_assessment_is_sent_in_mlflows_shape() {
    let a = Assessment {
        trace_id: "tr-0123".into(),
        name: "user_feedback".into(),
        source_type: "HUMAN".into(),
        source_id: "alice".into(),
        value: serde_json::json!(true),
        rationale: Some("helpful".into()),
        metadata: BTreeMap::from([("channel".to_string(), "web".to_string())]),
    };
    assert_eq!(
        assessment_body(&a),
        serde_json::json!({"assessment": {
            "assessment_name": "user_feedback",
            "trace_id": "tr-0123",
            "source": {"source_type": "HUMAN", "source_id": "alice"},
            "feedback": {"value": true},
            "rationale": "helpful",
            "metadata": {"channel": "web"},
        }})
    );
    let bare = Assessment {
        rationale: None,
        metadata: BTreeMap::new(),
        value: serde_json::json!(4),
        ..a
    };
    let body = assessment_body(&bare);
    assert_eq!(body["assessment"]["feedback"]["value"], 4);
    assert!(body["assessment"].get("rationale").is_none());
}
