//! The API contract against the live server: `GET /v1/openapi.json` is
//! docs/openapi.yaml, and schemathesis (PyPI, installed by
//! `deploy/install-pytools.sh`) generates requests from it for every
//! operation — examples, boundary and invalid values, random fuzzing and
//! stateful sequences following the document's links (request a run, then
//! read and cancel it) — against the real binary with auth on, and finds no
//! 5xx, no undocumented status, content type or header, and no response
//! that breaks its schema. (That every route is in the document and the
//! reverse is a unit test of serving/src/api/openapi.rs.) Without the
//! virtualenv the test skips itself unless `LAMINA_REQUIRE_PEERS=1`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, WorkDir, free_port, write_config};

fn schemathesis() -> Option<PathBuf> {
    let python = std::env::var_os("LAMINA_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/lamina/tools/py-1/bin/python"))
        });
    let st = python
        .and_then(|p| Some(p.parent()?.join("st")))
        .filter(|p| p.is_file());
    if st.is_none() && std::env::var("LAMINA_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("schemathesis is not installed (bash deploy/install-pytools.sh)");
    }
    st
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let dir = WorkDir::new("openapi");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "\n[auth]\ntoken = \"fuzz-token\"\n");
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);

    let r = server.client().get("/v1/openapi.json").unwrap();
    assert_eq!(r.status, 200);
    let doc = r.json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/ingest/{stream}"]["post"].is_object());

    let Some(st) = schemathesis() else {
        return;
    };
    let out = Command::new(st)
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .args([
            "run",
            &format!("http://127.0.0.1:{http}/v1/openapi.json"),
            "--header",
            "Authorization: Bearer fuzz-token",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "100",
            "--seed",
            "20261202",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("generated") || l.contains("passed") || l.contains("failure"))
        .collect();
    eprintln!("schemathesis: {}", summary.join(" | "));
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{said}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    // Every operation was tested (schemathesis may leave out the
    // document's own route, /v1/openapi.json).
    let field = |name: &str| -> u64 {
        said.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split('/').next()?.trim().parse().ok())
            .unwrap_or(0)
    };
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(
        field("Tested:") == field("Selected:") && field("Tested:") as usize >= operations - 1,
        "{said}"
    );
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
    assert!(server.terminate().success());
}
