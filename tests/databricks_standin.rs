//! The Databricks stand-in (tests/support/databricks.rs) checked against
//! what the real clients do: the MLflow Python client with the Databricks
//! SDK logs a trace and a feedback to it with a PAT, with OAuth M2M and with
//! a profile file, and the stand-in must have stored what the client sent.
//! Plus the stand-in's own enforcement (auth, faults), exercised with a plain
//! HTTP client.

#[path = "support/databricks.rs"]
mod databricks;

use databricks::Databricks;

#[tokio::test]
async fn standin_answers_host_metadata_without_auth() {
    let dbx = Databricks::start().await;
    let body = reqwest_get(&format!("{}/.well-known/databricks-config", dbx.host()), None).await;
    assert_eq!(body.0, 200);
    assert!(body.1.contains(databricks::WORKSPACE_ID));
}

async fn reqwest_get(url: &str, bearer: Option<&str>) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let mut req = http::Request::get(url);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let resp = client.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
