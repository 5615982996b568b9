//! The web console in a real browser: the real binary serves it, headless
//! Chromium (Debian's, installed by `deploy/install-chromium.sh`) runs its
//! script against the live server, and what the page shows — records per
//! stream, the charts' points, views' keys, a key lookup, the top-k table,
//! the batch runs — matches the REST answers, and changes as lines come in.
//! A screenshot is kept in the test's target directory. Without Chromium
//! the test skips itself unless `LAMINA_REQUIRE_PEERS=1`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Server, WorkDir, eventually, free_port, send_tcp, write_config};

const TOKEN: &str = "console-test-token";

fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("LAMINA_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromium")])
        .find(|p| p.is_file());
    if found.is_none() && std::env::var("LAMINA_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("Chromium is not installed (bash deploy/install-chromium.sh)");
    }
    found
}

/// Runs headless Chromium on `url` with `args` (after the page's script
/// had 5 s of the page's time: five polls of the API); its stdout.
fn headless(chromium: &PathBuf, args: &[&str], url: &str) -> Vec<u8> {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The page's DOM once its script has run.
fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    String::from_utf8(headless(chromium, &["--dump-dom"], url)).unwrap()
}

/// The value of attribute `attr` of the element with id `id`.
fn attr(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let tag = &dom[start..at + dom[at..].find('>')?];
    let from = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[from..from + tag[from..].find('"')?].to_owned())
}

/// `(data-key, data-value)` of the top-k table's rows, in order.
fn top_rows(dom: &str) -> Vec<(String, String)> {
    let body = &dom[dom.find("id=\"top-rows\"").unwrap()..];
    let body = &body[..body.find("</tbody>").unwrap()];
    body.split("<tr ")
        .skip(1)
        .map(|row| {
            let get = |a: &str| {
                let from = row.find(&format!("{a}=\"")).unwrap() + a.len() + 2;
                row[from..from + row[from..].find('"').unwrap()]
                    .replace("&quot;", "\"")
                    .to_owned()
            };
            (get("data-key"), get("data-value"))
        })
        .collect()
}

fn number(dom: &str, id: &str, name: &str) -> u64 {
    attr(dom, id, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} on #{id} in:\n{dom}"))
}

#[test]
fn the_console_shows_live_streams_views_and_runs_that_match_the_api() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = WorkDir::new("console");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(
        dir.path(),
        http,
        tcp,
        &format!("\n[auth]\ntoken = \"{TOKEN}\"\n"),
    );
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{http}");

    // The page and its script, with a policy that allows nothing else.
    let page = server.client().get("/").unwrap();
    assert_eq!(page.status, 200);
    let script = server.client().get("/console.js").unwrap();
    assert_eq!(script.status, 200);

    let lines = |n: usize, salt: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("w{} v{} always", (i * 7 + salt) % 23, i % 5))
            .collect()
    };
    send_tcp(tcp, &lines(300, 0));
    eventually(Duration::from_secs(10), || {
        server.get("/v1/streams").1["streams"][0]["records_total"] == 300
    })
    .expect("300 lines in");

    let dom = dump_dom(&chromium, &format!("{base}/#view=word_counts&key=always"));
    assert!(
        number(&dom, "stream-lines-records", "data-value") == 300,
        "{dom}"
    );
    let points = number(&dom, "chart-lines-processing", "data-points");
    assert!(points >= 1, "{dom}");
    assert!(
        number(&dom, "chart-lines-rate", "data-points") >= 1,
        "{dom}"
    );
    let (_, views) = server.get("/v1/views");
    let keys = views["views"][0]["keys"].as_u64().unwrap();
    assert_eq!(number(&dom, "view-word_counts-keys", "data-value"), keys);
    let (_, always) = server.get("/v1/views/word_counts/keys/always");
    assert_eq!(always["value"], 300);
    assert_eq!(number(&dom, "lookup-value", "data-value"), 300);
    let (_, top) = server.get("/v1/views/word_counts/top?k=10");
    let want: Vec<(String, String)> = top["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_owned(),
                i["value"].to_string(),
            )
        })
        .collect();
    assert_eq!(top_rows(&dom), want);
    assert!(dom.contains("id=\"health\" class=\"ok\""), "{dom}");

    // More lines and a batch run: the page follows.
    send_tcp(tcp, &lines(200, 3));
    eventually(Duration::from_secs(10), || {
        server.get("/v1/streams").1["streams"][0]["records_total"] == 500
    })
    .expect("500 lines in");
    let r = server
        .client()
        .post(
            "/v1/batch/runs",
            b"",
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .unwrap();
    assert_eq!(r.status, 202);
    common::eventually(Duration::from_secs(30), || {
        server.get("/v1/batch/runs/1").1["state"] == "succeeded"
    })
    .expect("the run succeeds");
    let dom = dump_dom(&chromium, &format!("{base}/#view=word_counts&key=always"));
    assert_eq!(number(&dom, "stream-lines-records", "data-value"), 500);
    assert!(number(&dom, "chart-lines-processing", "data-points") > points);
    assert_eq!(number(&dom, "lookup-value", "data-value"), 500);
    assert!(
        dom.contains("data-run=\"1\" data-state=\"succeeded\""),
        "{dom}"
    );

    // A picture of it, kept as the test's artifact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &chromium,
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("{base}/#view=word_counts&key=always"),
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    eprintln!("console screenshot: {}", shot.display());
    assert!(server.terminate().success());
}
