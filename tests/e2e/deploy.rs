//! The deploy files: the systemd unit passes `systemd-analyze verify`
//! (with its ExecStart pointed at the binary under test), and the
//! production example config (S3 master dataset, Kafka source, token from a
//! file) is valid and runs: started with its storage pointed at a real
//! S3-compatible server and its brokers at an address where none answers,
//! writes need the token from the file, a batch run goes through S3, and the
//! Kafka receiver says it is retrying. Without systemd-analyze or s3s-fs
//! the parts skip themselves unless `LAMINA_REQUIRE_PEERS=1`.

mod common;

#[path = "../support/s3.rs"]
mod s3_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Server, WorkDir, eventually, free_port, lamina};
use s3_server::S3Server;

fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

fn require_peers() -> bool {
    std::env::var("LAMINA_REQUIRE_PEERS").as_deref() == Ok("1")
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(!require_peers(), "systemd-analyze is not installed");
        return;
    }
    let dir = WorkDir::new("unit");
    let unit = std::fs::read_to_string(deploy_file("lamina.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/lamina serve --config /etc/lamina/lamina.toml"),
        "{unit}"
    );
    let unit = unit.replace("/usr/local/bin/lamina", env!("CARGO_BIN_EXE_lamina"));
    let path = dir.path().join("lamina.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    // The arguments the unit passes are ones the binary takes.
    let help = lamina().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--log-format") && help.contains("--config"),
        "{help}"
    );
}

#[test]
fn the_production_config_is_valid_and_runs_on_s3_with_a_token_file() {
    let production = deploy_file("production.toml");
    let out = lamina()
        .arg("check-config")
        .arg(&production)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let Some(binary) = S3Server::binary() else {
        return;
    };
    let dir = WorkDir::new("production");
    let s3 = S3Server::start(&binary, &dir.path().join("s3"));
    s3.create_bucket("acme-lamina");
    let http = free_port();
    let dead_broker = free_port();
    std::fs::write(dir.path().join("token"), "prod-token-31f5\n").unwrap();
    // Only where it runs changes: the address, the files, the endpoint.
    let text = std::fs::read_to_string(&production)
        .unwrap()
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{http}"))
        .replace("/etc/lamina/token", "token")
        .replace("/var/lib/lamina/state", "state")
        .replace(
            "kafka-1:9092,kafka-2:9092,kafka-3:9092",
            &format!("127.0.0.1:{dead_broker}"),
        )
        .replace(
            "region = \"eu-west-1\"",
            &format!(
                "region = \"us-east-1\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"",
                s3.endpoint(),
                s3_server::ACCESS_KEY,
                s3_server::SECRET_KEY
            ),
        );
    let config = dir.path().join("lamina.toml");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(
        dir.path(),
        http,
        &["--config", config.to_str().unwrap(), "--log-format", "json"],
    );
    let body = b"{\"user\":\"ann\",\"url\":\"/a\",\"ms\":40}\n";
    let refused = server
        .client()
        .post("/v1/ingest/clicks", body, &[])
        .unwrap();
    assert_eq!(refused.status, 401);
    let ok = server
        .client()
        .post(
            "/v1/ingest/clicks",
            body,
            &[("authorization", "Bearer prod-token-31f5")],
        )
        .unwrap();
    assert_eq!(ok.status, 200);
    let run = server
        .client()
        .post(
            "/v1/batch/runs",
            b"",
            &[("authorization", "Bearer prod-token-31f5")],
        )
        .unwrap();
    assert_eq!(run.status, 202);
    let id = run.json().unwrap()["id"].as_u64().unwrap();
    let mut last = serde_json::Value::Null;
    eventually(Duration::from_secs(60), || {
        last = server.get(&format!("/v1/batch/runs/{id}")).1;
        last["state"] != "queued" && last["state"] != "running"
    })
    .expect("the run ends");
    assert_eq!(last["state"], "succeeded", "{last}\n{}", server.log_text());
    let (_, ann) = server.get("/v1/views/time_by_user/keys/ann");
    assert_eq!(ann["batch_value"], 40, "{ann}");
    // The master dataset is on S3.
    assert!(
        dir.path()
            .join("s3/acme-lamina/prod/master/_manifest.json")
            .is_file()
    );
    // The Kafka receiver, with no broker to reach, says so.
    let (_, streams) = server.get("/v1/streams");
    let status = streams["streams"][0]["receiver_status"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["receiver"]
                .as_str()
                .is_some_and(|r| r.starts_with("kafka"))
        })
        .and_then(|r| r["status"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        status.starts_with("retrying") || status.starts_with("connecting"),
        "{streams}"
    );
    assert!(server.terminate().success());
}
