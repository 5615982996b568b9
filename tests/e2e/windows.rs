//! Windowed views and event time through the real binary: windows over
//! event time exact through `kill -9`, late records counted and kept aside,
//! windows over the time records were received, config errors.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, WorkDir, eventually, free_port, lamina};
use lamina_serving::client::Client;

/// 2026-01-01T00:00:00Z in ms: event times start here.
const T0: i64 = 1_767_225_600_000;
/// Event time between consecutive records.
const STEP_MS: i64 = 50;
const LATENESS_MS: i64 = 2_000;
const USERS: usize = 7;

fn config(dir: &std::path::Path, http: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{http}"

[speed]
batch_interval_ms = 50
epoch_ms = 1000

[[stream]]
name = "clicks"
format = "json"
schema = [ {{ name = "ts", type = "int64" }}, {{ name = "user", type = "string" }} ]
event_time = "ts"
allowed_lateness_secs = 2

[[view]]
name = "per_minute"
stream = "clicks"
key = {{ column = "user" }}
aggregate = "count"
window = {{ length_secs = 60 }}

[[view]]
name = "last_10_minutes"
stream = "clicks"
key = {{ column = "user" }}
aggregate = "count"
window = {{ length_secs = 600, slide_secs = 60 }}

[[view]]
name = "clicks_total"
stream = "clicks"
key = {{ column = "user" }}
aggregate = "count"

[batch]
schedule = "off"
"#
    );
    let path = dir.join("lamina.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Record `j`: user `u{j % 7}`, event time `T0 + j * 50 ms`, except every
/// 13th, which is 5 s behind (late: more than the 2 s allowed).
fn record(j: i64) -> (i64, String) {
    let ts = if j % 13 == 12 {
        T0 + j * STEP_MS - 5_000
    } else {
        T0 + j * STEP_MS
    };
    (ts, format!("u{}", j as usize % USERS))
}

/// What the views must say after `records` records, in log order: per
/// window bucket (minute) and user the on-time records, per user all of
/// them, and the number of late ones.
#[derive(Debug, Default, PartialEq)]
struct Truth {
    minutes: BTreeMap<(i64, String), i64>,
    totals: BTreeMap<String, i64>,
    late: u64,
}

fn truth(records: i64) -> Truth {
    let mut t = Truth::default();
    let mut wm = i64::MIN;
    for j in 0..records {
        let (ts, user) = record(j);
        *t.totals.entry(user.clone()).or_default() += 1;
        if ts < wm {
            t.late += 1;
        } else {
            *t.minutes
                .entry((ts.div_euclid(60_000) * 60_000, user))
                .or_default() += 1;
        }
        wm = wm.max(ts - LATENESS_MS);
    }
    t
}

fn value(server: &Server, path: &str) -> i64 {
    let (status, v) = server.get(path);
    assert_eq!(status, 200, "{path}: {v}");
    v["value"].as_i64().unwrap_or(-1)
}

#[test]
fn event_time_windows_are_exact_through_kill_9_and_late_records_are_kept_aside() {
    let dir = WorkDir::new("windows");
    let http = free_port();
    let config = config(dir.path(), http);
    let start = || Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);
    let mut server = start();
    let acked = Arc::new(Mutex::new(0i64));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            let client = Client::new(&format!("http://127.0.0.1:{http}"), None)
                .unwrap()
                .with_timeout(Duration::from_secs(5));
            // 20 records a request, at most 4000 records (200 s of event
            // time: four minutes of windows).
            for req in 0..200i64 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let mut body = String::new();
                for j in req * 20..(req + 1) * 20 {
                    let (ts, user) = record(j);
                    body.push_str(&format!("{{\"ts\":{ts},\"user\":\"{user}\"}}\n"));
                }
                common::ingest_until_acked(&client, "clicks", &format!("windows-{req}"), &body);
                *acked.lock().unwrap() = (req + 1) * 20;
            }
        })
    };
    for kill in 0..4u64 {
        std::thread::sleep(Duration::from_millis(250 + 150 * kill));
        server.kill9();
        server = start();
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    producer.join().unwrap();
    let records = *acked.lock().unwrap();
    assert!(records >= 400, "too little load: {records} records");
    let want = truth(records);
    assert!(want.late > 10, "{want:?}");

    // Every record committed: the totals view counts late records too.
    let ok = eventually(Duration::from_secs(30), || {
        want.totals
            .iter()
            .all(|(u, n)| value(&server, &format!("/v1/views/clicks_total/keys/{u}")) == *n)
    });
    assert!(ok.is_some(), "totals differ\n{}", server.log_text());
    // Each minute's window, per user: the on-time records of that minute —
    // for the minutes still kept (the retention is the length plus the
    // lateness, rounded up to the slide, plus a slide: three minutes behind
    // the newest); older ones were evicted and answer 0.
    let last_minute = T0 + (records - 1) * STEP_MS;
    let newest = want.minutes.keys().map(|(b, _)| *b).max().unwrap();
    let kept_from = newest + 60_000 - 180_000;
    let mut end = T0 + 60_000;
    while end <= last_minute.div_euclid(60_000) * 60_000 + 60_000 {
        for u in 0..USERS {
            let user = format!("u{u}");
            let expect = if end - 60_000 >= kept_from {
                want.minutes
                    .get(&(end - 60_000, user.clone()))
                    .copied()
                    .unwrap_or(0)
            } else {
                0
            };
            let got = value(
                &server,
                &format!("/v1/views/per_minute/keys/{user}?window_end={end}"),
            );
            assert_eq!(got, expect, "user {user}, minute ending {end}");
        }
        end += 60_000;
    }
    // The ten-minute window holds every on-time record of each user.
    for u in 0..USERS {
        let user = format!("u{u}");
        let expect: i64 = want
            .minutes
            .iter()
            .filter(|((_, who), _)| *who == user)
            .map(|(_, n)| n)
            .sum();
        let got = value(
            &server,
            &format!(
                "/v1/views/last_10_minutes/keys/{user}?window_end={}",
                T0 + 600_000
            ),
        );
        assert_eq!(got, expect, "user {user}, ten minutes");
    }
    // Late records: counted once, kept as dead letters with the reason.
    let (_, streams) = server.get("/v1/streams");
    let clicks = &streams["streams"][0];
    assert_eq!(clicks["late_records_total"], want.late, "{streams}");
    assert_eq!(clicks["dead_letters_total"], want.late, "{streams}");
    let (_, views) = server.get("/v1/views");
    let per_minute = views["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "per_minute")
        .cloned()
        .unwrap();
    assert_eq!(per_minute["late_records"], want.late, "{views}");
    assert_eq!(per_minute["window"]["time"], "event", "{views}");
    let (_, dead) = server.get("/v1/streams/clicks/dead_letters");
    assert!(
        dead["items"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("late: event time")),
        "{dead}"
    );
    let (_, metrics) = (0, server.client().get("/metrics").unwrap().text());
    assert!(
        metrics.contains(&format!(
            "lamina_stream_late_records_total{{stream=\"clicks\"}} {}",
            want.late
        )),
        "{metrics}"
    );
    // Without window_end: the newest window the watermark has passed.
    let (_, newest) = server.get("/v1/views/per_minute/keys/u0");
    let wm = last_minute - LATENESS_MS;
    assert_eq!(
        newest["window_end_ms"].as_i64(),
        Some(wm.div_euclid(60_000) * 60_000),
        "{newest}"
    );
    let (_, top) = server.get(&format!(
        "/v1/views/last_10_minutes/top?k=3&window_end={}",
        T0 + 600_000
    ));
    assert_eq!(top["items"].as_array().map(Vec::len), Some(3), "{top}");
    assert!(server.terminate().success());
}

#[test]
fn windows_over_the_time_of_receipt_and_bad_window_configs() {
    let dir = WorkDir::new("windows-received");
    let http = free_port();
    let path = common::lines_config(
        dir.path(),
        http,
        None,
        "[speed]\nbatch_interval_ms = 50\n\n[[view]]\nname = \"recent\"\nstream = \"lines\"\nkey = { words = \"line\" }\naggregate = \"count\"\nwindow = { length_secs = 2, slide_secs = 1 }\n",
    );
    let server = Server::start(dir.path(), http, &["--config", path.to_str().unwrap()]);
    let (_, views) = server.get("/v1/views");
    let recent = views["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "recent")
        .cloned()
        .unwrap();
    assert_eq!(recent["window"]["time"], "received", "{views}");
    // `lamina status` describes it as a window.
    let out = lamina()
        .args(["status", "--server", &format!("http://127.0.0.1:{http}")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "view recent: 0 cells (\"count\" over 2 s windows every 1 s by received time"
        ),
        "{said}"
    );
    let r = server
        .client()
        .post("/v1/ingest/lines", b"be be quick\n", &[])
        .unwrap();
    assert_eq!(r.status, 200);
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // The record is in the two one-second buckets' windows that cover its
    // receipt: exactly one tumbling second has it.
    let ok = eventually(Duration::from_secs(10), || {
        value(&server, "/v1/views/word_counts/keys/be") == 2
    });
    assert!(ok.is_some());
    let second = sent.div_euclid(1000) * 1000;
    let seen: i64 = (second - 2000..=second + 2000)
        .step_by(1000)
        .map(|end| {
            // Windows of 2 s ending at `end` overlap; count the record per
            // one-second bucket by differencing adjacent windows is
            // overkill: the window ending one or two seconds after the
            // receipt holds it.
            value(
                &server,
                &format!("/v1/views/recent/keys/be?window_end={end}"),
            )
        })
        .max()
        .unwrap();
    assert_eq!(seen, 2);
    let (status, bad) = server.get("/v1/views/recent/keys/be?window_end=1500");
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = server.get("/v1/views/word_counts/keys/be?window_end=1000");
    assert_eq!(status, 400, "{bad}");
    assert!(server.terminate().success());

    // A length that is not a multiple of the slide, and an event-time
    // column that does not exist: refused with the key and the reason.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[stream]]\nname = \"e\"\nformat = \"json\"\nschema = [ { name = \"user\", type = \"string\" } ]\nevent_time = \"ts\"\n\n\
         [[view]]\nname = \"w\"\nstream = \"e\"\nkey = { column = \"user\" }\naggregate = \"count\"\nwindow = { length_secs = 25, slide_secs = 10 }\n",
    )
    .unwrap();
    let out = lamina().arg("check-config").arg(&bad).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("window.length_secs") && text.contains("not a multiple of slide_secs"),
        "{text}"
    );
    assert!(
        text.contains("event_time") && text.contains("no column \"ts\""),
        "{text}"
    );
}

#[test]
fn last_keeps_the_newest_value_by_event_time_through_kill_9_and_forgets_after_the_ttl() {
    let dir = WorkDir::new("last");
    let http = free_port();
    let path = dir.path().join("lamina.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{http}\"\n\n[speed]\nbatch_interval_ms = 50\n\n\
             [[stream]]\nname = \"readings\"\nformat = \"json\"\n\
             schema = [ {{ name = \"ts\", type = \"timestamp\" }}, {{ name = \"sensor\", type = \"string\" }}, {{ name = \"temp\", type = \"float64\" }} ]\n\
             event_time = \"ts\"\nallowed_lateness_secs = 3600\n\n\
             [[view]]\nname = \"latest\"\nstream = \"readings\"\nkey = {{ column = \"sensor\" }}\naggregate = \"last\"\ncolumn = \"temp\"\nttl_secs = 3\n\n\
             [batch]\nschedule = \"off\"\n"
        ),
    )
    .unwrap();
    let start = || Server::start(dir.path(), http, &["--config", path.to_str().unwrap()]);
    let server = start();
    let body = "{\"ts\":\"2026-12-01T06:00:05Z\",\"sensor\":\"s1\",\"temp\":20.5}\n\
                {\"ts\":\"2026-12-01T06:00:01Z\",\"sensor\":\"s1\",\"temp\":19.0}\n\
                {\"ts\":\"2026-12-01T06:00:02Z\",\"sensor\":\"s2\",\"temp\":7}\n";
    let r = server
        .client()
        .post("/v1/ingest/readings", body.as_bytes(), &[])
        .unwrap();
    assert_eq!(r.status, 200);
    let newest = |server: &Server| server.get("/v1/views/latest/keys/s1").1;
    // The value with the newest event time wins, not the one sent last.
    let ok = eventually(Duration::from_secs(10), || newest(&server)["value"] == 20.5);
    assert!(ok.is_some(), "{}", newest(&server));
    assert_eq!(newest(&server)["event_time"], "2026-12-01T06:00:05Z");
    // kill -9 within the TTL: the state comes back.
    server.kill9();
    let server = start();
    assert_eq!(newest(&server)["value"], 20.5);
    let (_, s2) = server.get("/v1/views/latest/keys/s2");
    assert_eq!(s2["value"], 7.0);
    // Three seconds without data: both keys are forgotten, and the store
    // holds nothing for them.
    let ok = eventually(Duration::from_secs(15), || {
        server.get("/v1/views").1["views"][0]["keys"] == 0
    });
    assert!(ok.is_some(), "{}", server.get("/v1/views").1);
    assert_eq!(newest(&server)["value"], serde_json::Value::Null);
    assert!(server.terminate().success());
}
