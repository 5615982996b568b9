//! The REST contract: paths, JSON shapes, status codes and error codes.

use std::sync::Arc;

use lamina::view::{AggValue, AggregateKind};
use lamina_batch::BatchRuns;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{ApiState, ViewInfo, routes};
use crate::store::{MicroBatchCommit, ViewStore};

struct Fixture {
    state: Arc<ApiState>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str, token: Option<&str>, permits: usize) -> Fixture {
    let dir = std::env::temp_dir().join(format!("lamina-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = ViewStore::open(&dir, &["word_counts".to_string()]).unwrap();
    store
        .commit(MicroBatchCommit {
            dead_letters: vec![],
            batch_id: 1,
            epoch: 0,
            positions: vec![],
            deltas: vec![(
                "word_counts".into(),
                vec![
                    ("to".into(), AggValue::Count(3)),
                    ("be".into(), AggValue::Count(2)),
                    ("a/b c".into(), AggValue::Count(1)),
                ],
            )],
        })
        .unwrap();
    let state = ApiState {
        store: Arc::new(store),
        runs: Arc::new(BatchRuns::new(10, vec![])),
        views: vec![ViewInfo {
            name: "word_counts".into(),
            stream: "lines".into(),
            aggregate: AggregateKind::Count,
        }],
        token: token.map(String::from),
        permits: Semaphore::new(permits),
    };
    Fixture {
        state: Arc::new(state),
        dir,
    }
}

async fn call(f: &Fixture, method: &str, path: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = warp::test::request().method(method).path(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.reply(&routes(Arc::clone(&f.state))).await;
    let body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
    (resp.status().as_u16(), body)
}

#[tokio::test]
async fn key_lookups_answer_the_contract_shape() {
    let f = fixture("keys", None, 8);
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/to", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"view": "word_counts", "key": "to", "value": 3, "batch_value": null, "realtime_value": 3, "watermark_epoch": null})
    );
    // Percent-encoded keys are decoded.
    let (_, body) = call(&f, "GET", "/v1/views/word_counts/keys/a%2Fb%20c", None).await;
    assert_eq!(body["key"], "a/b c");
    assert_eq!(body["value"], 1);
    // A key never seen has the identity of the aggregate.
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/never", None).await;
    assert_eq!((status, body["value"].clone()), (200, json!(0)));
    let (status, body) = call(&f, "GET", "/v1/views/nope/keys/x", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_view");
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/%zz", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_parameter"))
    );
}

#[tokio::test]
async fn top_and_views() {
    let f = fixture("top", None, 8);
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/top?k=2", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"view": "word_counts", "items": [{"key": "to", "value": 3}, {"key": "be", "value": 2}]})
    );
    let (_, body) = call(&f, "GET", "/v1/views/word_counts/top", None).await;
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        3,
        "k defaults to 10"
    );
    for bad in ["k=0", "k=abc", "k=10001", "k=-1"] {
        let (status, body) =
            call(&f, "GET", &format!("/v1/views/word_counts/top?{bad}"), None).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (400, json!("bad_parameter")),
            "{bad}"
        );
    }
    let (status, body) = call(&f, "GET", "/v1/views", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["views"][0]["name"], "word_counts");
    assert_eq!(body["views"][0]["keys"], 3);
    let (status, body) = call(&f, "GET", "/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = call(&f, "GET", "/v1/nothing/here", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}

#[tokio::test]
async fn batch_runs_need_the_token_when_one_is_configured() {
    let f = fixture("runs", Some("s3cret"), 8);
    let (status, body) = call(&f, "POST", "/v1/batch/runs", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let (status, _) = call(&f, "POST", "/v1/batch/runs", Some("Bearer wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = call(&f, "POST", "/v1/batch/runs", Some("Bearer s3cret")).await;
    assert_eq!(status, 202);
    assert_eq!(body["state"], "queued");
    let id = body["id"].as_u64().unwrap();
    let (status, body) = call(&f, "GET", &format!("/v1/batch/runs/{id}"), None).await;
    assert_eq!((status, body["id"].as_u64()), (200, Some(id)));
    let (_, body) = call(&f, "GET", "/v1/batch/runs", None).await;
    assert_eq!(body["runs"][0]["id"].as_u64(), Some(id));
    let (status, body) = call(&f, "GET", "/v1/batch/runs/999", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("unknown_run"))
    );
    let (status, body) = call(&f, "GET", "/v1/batch/runs/x", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_parameter"))
    );
    let (status, body) = call(
        &f,
        "POST",
        &format!("/v1/batch/runs/{id}/cancel"),
        Some("Bearer s3cret"),
    )
    .await;
    assert_eq!((status, body["state"].clone()), (202, json!("cancelled")));
}

#[tokio::test]
async fn requests_beyond_the_concurrency_cap_get_503() {
    let f = fixture("cap", None, 0);
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/to", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("overloaded"))
    );
}
