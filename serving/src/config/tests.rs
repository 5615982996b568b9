//! Tests across sections: the default, the deploy file, error reporting and
//! serialization.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use lamina::view::{AggregateKind, KeySpec, ViewSpec};

use super::*;

/// The deploy file (`deploy/lamina.toml` in the workspace).
const DEPLOY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/lamina.toml");

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(text, "test.toml")
}

fn errors(text: &str) -> ConfigErrors {
    match parse(text) {
        Ok(config) => panic!("expected errors, got {config:#?}\nfor:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that `text` has an error at `key` whose message contains
/// `fragment`, and returns it.
#[track_caller]
fn expect_error(text: &str, key: &str, fragment: &str) -> ConfigError {
    let all = errors(text);
    let Some(error) = all.for_key(key) else {
        panic!("no error for `{key}`; got:\n{all}");
    };
    assert!(
        error.message.contains(fragment),
        "error for `{key}` lacks {fragment:?}: {error}"
    );
    error.clone()
}

const LINES: &str = r#"
[[stream]]
name = "lines"
"#;

const SALES: &str = r#"
[[stream]]
name = "sales"
format = "json"
schema = [
  { name = "user", type = "string" },
  { name = "amount", type = "int64", nullable = true },
  { name = "price", type = "float64" },
  { name = "ok", type = "bool" },
  { name = "ts", type = "timestamp" },
]
"#;

#[test]
fn embedded_default_has_the_contract_values() {
    let config = Config::from_toml_str(DEFAULT_CONFIG, DEFAULT_ORIGIN).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(
        config.server.listen_addr().unwrap(),
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    let [lines] = config.streams.as_slice() else {
        panic!("one stream expected: {:?}", config.streams);
    };
    assert_eq!(
        (lines.name.as_str(), lines.format),
        ("lines", StreamFormat::Text)
    );
    assert_eq!(
        lines.receivers,
        [ReceiverConfig::TcpListen(TcpListenConfig {
            listen: "127.0.0.1:9999".into(),
            max_connections: 1024,
            idle_timeout_ms: 300_000,
        })]
    );
    assert_eq!(
        config.view_specs().unwrap(),
        [(
            "lines".to_owned(),
            ViewSpec {
                name: "word_counts".into(),
                key: KeySpec::Words("line".into()),
                aggregate: AggregateKind::Count,
                column: None,
            }
        )]
    );
    assert_eq!(
        config.storage.master_location().unwrap(),
        StorageUrl::File {
            path: PathBuf::from("./lamina-data/master")
        }
    );
    assert_eq!(
        config.storage.state_dir,
        PathBuf::from("./lamina-data/state")
    );
    let schedule = config.batch.build_schedule().unwrap().unwrap();
    let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // 2026-11-18T07:06:40Z
    assert_eq!(
        schedule.next_run_after(t),
        Some(UNIX_EPOCH + Duration::from_secs(1_795_000_200))
    );
    assert_eq!(config.auth.bearer_token().unwrap(), None);
}

#[test]
fn an_empty_file_is_the_embedded_default() {
    // The Rust defaults of every section, and the default stream and view,
    // agree with the text of DEFAULT_CONFIG.
    assert_eq!(parse("").unwrap(), Config::default());
    let (streams, views) = default_pipeline();
    assert_eq!(Config::default().streams, streams);
    assert_eq!(Config::default().views, views);
}

#[test]
fn deploy_file_equals_the_default() {
    let config = Config::load(std::path::Path::new(DEPLOY_FILE)).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn deploy_file_examples_are_valid() {
    // The commented-out alternatives in the deploy file, switched on.
    let text = std::fs::read_to_string(DEPLOY_FILE).unwrap();
    let text = text
        .replace("format = \"text\"", "format = \"json\"")
        .replace("# schema = [", "schema = [")
        .replace("#   { name", "  { name")
        .replace("# ]", "]")
        .replace("  # [[stream.receiver]]", "  [[stream.receiver]]")
        .replace("  # type = \"tcp_connect\"", "  type = \"tcp_connect\"")
        .replace("  # address", "  address")
        .replace("  # reconnect_", "  reconnect_")
        .replace("  # type = \"kafka\"", "  type = \"kafka\"")
        .replace("  # brokers", "  brokers")
        .replace("  # topic", "  topic")
        .replace("  # start", "  start")
        .replace("  # max_rate_per_partition", "  max_rate_per_partition")
        .replace("  # type = \"flume_avro\"", "  type = \"flume_avro\"")
        .replace(
            "  # listen = \"0.0.0.0:41414\"",
            "  listen = \"0.0.0.0:41414\"",
        )
        .replace("key = { words = \"line\" }", "key = { column = \"user\" }")
        .replace("aggregate = \"count\"", "aggregate = \"top_k\"")
        .replace("# column = \"amount\"", "column = \"amount\"")
        .replace("# k = 10", "k = 10")
        .replace("# token = \"change-me\"", "token = \"change-me\"");
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.streams[0].receivers.len(), 4);
    // The schema's 3 and the 6 source columns of Kafka and Flume.
    assert_eq!(config.streams[0].columns().len(), 9);
    assert_eq!(config.streams[0].format_columns().len(), 3);
    let (_, spec) = &config.view_specs().unwrap()[0];
    assert_eq!(spec.aggregate, AggregateKind::TopK { k: 10 });
    assert_eq!(
        config.auth.bearer_token().unwrap().as_deref(),
        Some("change-me")
    );
}

#[test]
fn streams_and_views_default_as_a_pair() {
    let config = parse("[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    assert_eq!(config.views, Config::default().views);
    let none = parse("stream = []\n").unwrap();
    assert!(none.streams.is_empty() && none.views.is_empty());
    let mut only_streams = String::from(SALES);
    only_streams.push_str(LINES);
    let config = parse(&only_streams).unwrap();
    assert_eq!(config.streams.len(), 2);
    assert!(config.views.is_empty());
    expect_error(
        "[[view]]\nname = \"v\"\nstream = \"lines\"\nkey = { words = \"line\" }\naggregate = \"count\"\n",
        "view[0].stream",
        "unknown stream \"lines\" (no streams are defined)",
    );
}

#[test]
fn unknown_keys_are_all_named_by_path() {
    let text = r#"
        [sever]
        listen = "x"
        [server]
        lisen = "127.0.0.1:1"
        [[stream]]
        name = "lines"
        colour = "red"
          [[stream.receiver]]
          type = "tcp_listen"
          listen = "127.0.0.1:9999"
          [[stream.receiver]]
          type = "tcp_listen"
          lisen = "127.0.0.1:9998"
          listen = "127.0.0.1:9997"
          max_conections = 3
        [[stream]]
        name = "sales"
        format = "csv"
        schema = [ { name = "a", type = "int64", nulable = true } ]
        [[view]]
        name = "v"
        stream = "lines"
        key = { words = "line" }
        aggregate = "count"
        colum = "line"
    "#;
    let all = errors(text);
    let keys: Vec<&str> = all.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sever",
            "server.lisen",
            "stream[0].colour",
            "stream[0].receiver[1].lisen",
            "stream[0].receiver[1].max_conections",
            "stream[1].schema[0].nulable",
            "view[0].colum",
        ],
        "{all}"
    );
    assert!(all.errors.iter().all(|e| e.message == "unknown key"));
    let lisen = all.for_key("stream[0].receiver[1].lisen").unwrap();
    assert_eq!(
        lisen.location,
        Some(Location {
            line: 14,
            column: 11
        })
    );
    assert!(
        all.to_string()
            .contains("test.toml:14:11: stream[0].receiver[1].lisen: unknown key"),
        "{all}"
    );
}

#[test]
fn bad_values_name_the_key_the_value_and_what_is_expected() {
    let speed = |body: &str| format!("[speed]\n{body}\n");
    expect_error(
        &speed("batch_interval_ms = 5"),
        "speed.batch_interval_ms",
        "5 is out of range (10..=60000)",
    );
    expect_error(
        &speed("epoch_ms = 1100"),
        "speed.epoch_ms",
        "1100 is not a multiple of speed.batch_interval_ms (200)",
    );
    expect_error(
        &speed("epoch_ms = 100"),
        "speed.epoch_ms",
        "out of range (200..=",
    );
    expect_error(
        "[batch]\nschedule = \"*/61 * * * *\"\n",
        "batch.schedule",
        "\"*/61 * * * *\" is not a valid cron expression: ",
    );
    expect_error(
        "[batch]\nretention_generations = 0\n",
        "batch.retention_generations",
        "0 is out of range (1..=1000)",
    );
    expect_error(
        "[batch]\ncompaction_min_files = 1\n",
        "batch.compaction_min_files",
        "1 is out of range (2..=100000)",
    );
    expect_error(
        "[batch]\ncompaction_target_bytes = 10\n",
        "batch.compaction_target_bytes",
        "10 is out of range (1024..=",
    );
    expect_error("[batch]\ncompaction = \"yes\"\n", "batch.compaction", "");
    expect_error(
        &format!("{LINES}{LINES}"),
        "stream[1].name",
        "duplicate stream name \"lines\" (also stream[0])",
    );
    expect_error(
        "[server]\nlisten = \"localhost:80\"\n",
        "server.listen",
        "\"localhost:80\" is not a socket address",
    );
    expect_error(
        &format!("{LINES}[[stream.receiver]]\ntype = \"tcp_listen\"\nlisten = \"1.2.3.4:99999\"\n"),
        "stream[0].receiver[0].listen",
        "\"1.2.3.4:99999\" is not a socket address",
    );
    expect_error(
        &format!(
            "{LINES}[[stream.receiver]]\ntype = \"tcp_connect\"\naddress = \"nohost\"\nreconnect_min_ms = 500\nreconnect_max_ms = 100\n"
        ),
        "stream[0].receiver[0].address",
        "\"nohost\" is not a HOST:PORT address",
    );
    expect_error(
        &format!(
            "{LINES}[[stream.receiver]]\ntype = \"tcp_connect\"\naddress = \"h:1\"\nreconnect_min_ms = 500\nreconnect_max_ms = 100\n"
        ),
        "stream[0].receiver[0].reconnect_max_ms",
        "100 is out of range (500..=3600000",
    );
    expect_error(
        "[[stream]]\nname = \"lines\"\nhistory = [\"file:///ok\", \"gs://b/old\"]\n",
        "stream[0].history[1]",
        "unsupported scheme \"gs\"",
    );
    expect_error(
        "[storage]\nmaster_url = \"gs://bucket/x\"\n",
        "storage.master_url",
        "unsupported scheme \"gs\"",
    );
    expect_error("[auth]\ntoken = \"\"\n", "auth.token", "the token is empty");
    expect_error(
        "[auth]\ntoken = \"a\"\ntoken_file = \"/t\"\n",
        "auth.token_file",
        "set exactly one",
    );
    expect_error(
        "[server]\nmax_body_bytes = 1000\n",
        "stream[0].max_record_bytes",
        "1048576 is out of range (1..=1000",
    );
}

#[test]
fn names_must_be_url_path_safe() {
    let stream = |name: &str| format!("[[stream]]\nname = {name:?}\n");
    let long = "x".repeat(129);
    for bad in ["my stream", "", "a/b", "ü", long.as_str()] {
        expect_error(
            &stream(bad),
            "stream[0].name",
            "is not a valid name (1 to 128 of",
        );
    }
    expect_error(&stream(".."), "stream[0].name", "URL path segment");
    // Regression: a stream named `_manifest.json` passed and then broke
    // sealing every second.
    for reserved in ["_manifest.json", "_writer.lease", ".hidden", "-x"] {
        expect_error(
            &stream(reserved),
            "stream[0].name",
            "must start with a letter or a digit",
        );
    }
    for ok in ["a", "A.b-c_9", &"x".repeat(128)] {
        parse(&format!("view = []\n{}", stream(ok))).unwrap();
    }
    expect_error(
        &format!(
            "{LINES}[[view]]\nname = \"word counts\"\nstream = \"lines\"\nkey = {{ words = \"line\" }}\naggregate = \"count\"\n"
        ),
        "view[0].name",
        "\"word counts\" is not a valid name",
    );
}

#[test]
fn schemas_follow_the_format() {
    expect_error(
        "[[stream]]\nname = \"s\"\nformat = \"json\"\n",
        "stream[0].schema",
        "required for format json",
    );
    expect_error(
        "[[stream]]\nname = \"s\"\nschema = [ { name = \"a\", type = \"string\" } ]\n",
        "stream[0].schema",
        "not allowed for format text",
    );
    expect_error(
        "[[stream]]\nname = \"s\"\nformat = \"csv\"\nschema = [ { name = \"a\", type = \"string\" }, { name = \"a\", type = \"int64\" } ]\n",
        "stream[0].schema[1].name",
        "duplicate column name \"a\" (also stream[0].schema[0])",
    );
}

/// One `[[view]]` over the `sales` stream.
fn sales_view(body: &str) -> String {
    format!("{SALES}[[view]]\nname = \"v\"\nstream = \"sales\"\n{body}\n")
}

#[test]
fn views_must_fit_their_stream() {
    expect_error(
        &format!(
            "{LINES}[[view]]\nname = \"v\"\nstream = \"x\"\nkey = {{ words = \"line\" }}\naggregate = \"count\"\n"
        ),
        "view[0].stream",
        "unknown stream \"x\" (streams: lines)",
    );
    let cases = [
        (
            "key = { words = \"amount\" }\naggregate = \"count\"",
            "view[0].key.words",
            "column \"amount\" of stream \"sales\" is int64; words needs a string column",
        ),
        (
            "key = { words = \"nope\" }\naggregate = \"count\"",
            "view[0].key.words",
            "unknown column \"nope\" in stream \"sales\" (columns: user, amount, price, ok, ts)",
        ),
        (
            "key = { column = \"ts\" }\naggregate = \"count\"",
            "view[0].key.column",
            "use time_bucket",
        ),
        (
            "key = { time_bucket = { column = \"user\", width_secs = 60 } }\naggregate = \"count\"",
            "view[0].key.time_bucket.column",
            "is string; time_bucket needs a timestamp or int64",
        ),
        (
            "key = { time_bucket = { column = \"ts\", width_secs = 0 } }\naggregate = \"count\"",
            "view[0].key.time_bucket.width_secs",
            "0 is out of range (1..=",
        ),
        (
            "key = { tuple = [ { column = \"user\" }, { words = \"ok\" } ] }\naggregate = \"count\"",
            "view[0].key.tuple[1].words",
            "is bool; words needs a string column",
        ),
        (
            "key = { tuple = [ { tuple = [ { column = \"user\" } ] } ] }\naggregate = \"count\"",
            "view[0].key.tuple[0]",
            "tuples cannot be nested",
        ),
        (
            "key = { tuple = [] }\naggregate = \"count\"",
            "view[0].key.tuple",
            "needs at least one part",
        ),
        (
            "key = { column = \"user\" }\naggregate = \"sum\"",
            "view[0].column",
            "required for aggregate sum",
        ),
        (
            "key = { column = \"user\" }\naggregate = \"mean\"\ncolumn = \"user\"",
            "view[0].column",
            "is string; mean needs an int64 or float64 column",
        ),
        (
            "key = { column = \"user\" }\naggregate = \"distinct\"\ncolumn = \"ok\"",
            "view[0].column",
            "distinct needs a string, int64 or float64 column",
        ),
        (
            "key = { column = \"user\" }\naggregate = \"count\"\ncolumn = \"amount\"",
            "view[0].column",
            "not allowed for aggregate count",
        ),
        (
            "key = { column = \"user\" }\naggregate = \"top_k\"\ncolumn = \"price\"",
            "view[0].k",
            "required for aggregate top_k",
        ),
        (
            "key = { column = \"user\" }\naggregate = \"top_k\"\ncolumn = \"price\"\nk = 0",
            "view[0].k",
            "0 is out of range (1..=10000)",
        ),
        (
            "key = { column = \"user\" }\naggregate = \"max\"\ncolumn = \"price\"\nk = 3",
            "view[0].k",
            "only allowed for aggregate top_k",
        ),
    ];
    for (body, key, fragment) in cases {
        expect_error(&sales_view(body), key, fragment);
    }
    // Every kind of key and aggregate that fits.
    let good = [
        "key = { column = \"ok\" }\naggregate = \"sum\"\ncolumn = \"amount\"",
        "key = { time_bucket = { column = \"amount\", width_secs = 1 } }\naggregate = \"min\"\ncolumn = \"price\"",
        "key = { tuple = [ { column = \"user\" }, { time_bucket = { column = \"ts\", width_secs = 3600 } } ] }\naggregate = \"distinct\"\ncolumn = \"user\"",
        "key = { column = \"price\" }\naggregate = \"top_k\"\ncolumn = \"amount\"\nk = 3",
    ];
    for body in good {
        let config = parse(&sales_view(body)).unwrap_or_else(|e| panic!("{e}"));
        let specs = config.view_specs().unwrap();
        assert_eq!(specs[0].0, "sales");
    }
}

#[test]
fn listen_addresses_must_not_clash() {
    let receiver = |addr: &str| {
        format!("  [[stream.receiver]]\n  type = \"tcp_listen\"\n  listen = {addr:?}\n")
    };
    let text = format!(
        "{LINES}{}{}{}{}",
        receiver("127.0.0.1:8080"),
        receiver("0.0.0.0:9999"),
        receiver("127.0.0.1:9999"),
        receiver("127.0.0.1:0"),
    );
    let all = errors(&format!("{text}{}", receiver("127.0.0.1:0")));
    assert_eq!(all.errors.len(), 2, "{all}");
    expect_error(
        &text,
        "stream[0].receiver[0].listen",
        "127.0.0.1:8080 conflicts with server.listen (127.0.0.1:8080)",
    );
    expect_error(
        &text,
        "stream[0].receiver[2].listen",
        "conflicts with stream[0].receiver[1].listen (0.0.0.0:9999)",
    );
}

#[test]
fn toml_syntax_and_type_errors_come_with_their_place() {
    let syntax = errors("[server]\nlisten = = 1\n");
    assert_eq!(syntax.errors.len(), 1);
    assert_eq!(syntax.errors[0].key, "");
    assert_eq!(
        syntax.errors[0].location,
        Some(Location {
            line: 2,
            column: 10
        })
    );
    assert!(
        syntax
            .to_string()
            .starts_with("test.toml:2:10: invalid TOML: "),
        "{syntax}"
    );

    let ty = expect_error(
        "[server]\nmax_body_bytes = \"big\"\n",
        "server.max_body_bytes",
        "invalid type: string \"big\", expected u64",
    );
    assert_eq!(
        ty.location,
        Some(Location {
            line: 2,
            column: 18
        })
    );
    expect_error(
        &format!("{LINES}[[stream]]\nformat = \"json\"\n"),
        "stream[1]",
        "missing field `name`",
    );
    let inner = expect_error(
        &format!(
            "{LINES}[[stream.receiver]]\ntype = \"tcp_connect\"\naddress = \"h:1\"\nreconnect_min_ms = \"soon\"\n"
        ),
        "stream[0].receiver[0].reconnect_min_ms",
        "invalid type: string \"soon\", expected u64",
    );
    assert_eq!(
        inner.location,
        Some(Location {
            line: 7,
            column: 20
        })
    );
    expect_error(
        &format!("{LINES}[[stream.receiver]]\ntype = \"tcp_listen\"\n"),
        "stream[0].receiver[0]",
        "missing field `listen`",
    );
    expect_error(
        &format!("{LINES}[[stream.receiver]]\ntype = \"udp\"\n"),
        "stream[0].receiver[0].type",
        "unknown variant `udp`",
    );
    expect_error(
        &sales_view("key = { word = \"user\" }\naggregate = \"count\""),
        "view[0].key.word",
        "unknown variant `word`",
    );
    expect_error(
        &sales_view("key = { words = \"user\" }\naggregate = \"median\""),
        "view[0].aggregate",
        "unknown variant `median`",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[server]
listen = "127.0.0.1:8080"
max_concurrent_requests = 0

[speed]
batch_interval_ms = 5
extra = 1

[[stream]]
name = "lines"

[[stream]]
name = "lines"

[[view]]
name = "a"
stream = "x"
key = { words = "line" }
aggregate = "count"

[[view]]
name = "b"
stream = "lines"
key = { words = "line" }
aggregate = "sum"

[batch]
schedule = "*/61 * * * *"
"#;
    let all = errors(text);
    let keys: Vec<&str> = all.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.max_concurrent_requests",
            "speed.batch_interval_ms",
            "speed.extra",
            "stream[1].name",
            "view[0].stream",
            "view[1].column",
            "batch.schedule",
        ],
        "{all}"
    );
    let shown = all.to_string();
    assert_eq!(shown.lines().count(), 7, "{shown}");
    assert!(
        shown.lines().all(|l| l.starts_with("test.toml:")),
        "{shown}"
    );
    assert!(
        shown.contains("test.toml:7:1: speed.batch_interval_ms: 5 is out of range (10..=60000)")
    );
    // A key the file does not set is located at its table.
    assert!(
        shown.contains("test.toml:22:1: view[1].column: required for aggregate sum"),
        "{shown}"
    );
    assert!(
        shown.contains("view[0].stream: unknown stream \"x\" (streams: lines)\n"),
        "{shown}"
    );
}

#[test]
fn load_reports_unreadable_files() {
    let dir = std::env::temp_dir().join(format!("lamina-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert_eq!(err.origin, missing.display().to_string());
    assert!(
        err.errors[0]
            .message
            .starts_with("cannot read the config file"),
        "{err}"
    );

    let file = dir.join("lamina.toml");
    std::fs::write(&file, "[speed]\nbatch_interval_ms = 1\n").unwrap();
    let err = Config::load(&file).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:1: speed.batch_interval_ms", file.display())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut config = Config::default();
    assert!(config.validate("code").is_ok());
    config.views[0].stream = "nope".into();
    config.speed.batch_interval_ms = 0;
    let err = config.validate("code").unwrap_err();
    assert_eq!(err.errors.len(), 2, "{err}");
    assert!(err.errors.iter().all(|e| e.location.is_none()));
}

/// A small deterministic generator (SplitMix64), enough to vary configs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn name(&mut self) -> String {
        let len = 1 + self.below(12) as usize;
        (0..len)
            .map(|_| *self.pick(b"abcXYZ019_.-") as char)
            .collect()
    }

    fn key(&mut self, depth: usize) -> KeySpec {
        match self.below(if depth == 0 { 4 } else { 3 }) {
            0 => KeySpec::Column(self.name()),
            1 => KeySpec::Words(self.name()),
            2 => KeySpec::TimeBucket {
                column: self.name(),
                width_secs: self.below(100_000),
            },
            _ => KeySpec::Tuple((0..self.below(4)).map(|_| self.key(depth + 1)).collect()),
        }
    }

    fn config(&mut self) -> Config {
        let mut config = Config::default();
        config.server.max_body_bytes = self.next() >> 1;
        config.server.shutdown_timeout_ms = self.below(1 << 40);
        config.speed.epoch_ms = self.below(1 << 20);
        config.storage.master_url = format!("s3://{}/p\"q'", self.name());
        config.storage.state_dir = PathBuf::from(format!("dir with space/{}", self.name()));
        config.batch.schedule = self.pick(&["", "off", "@daily", "0 3 * * 1-5"]).to_string();
        config.streams = (0..self.below(4))
            .map(|_| {
                let mut stream = StreamConfig::text(self.name());
                stream.format =
                    *self.pick(&[StreamFormat::Text, StreamFormat::Json, StreamFormat::Csv]);
                stream.max_record_bytes = self.below(1 << 30);
                if self.chance() {
                    let types = [
                        ColumnType::String,
                        ColumnType::Int64,
                        ColumnType::Float64,
                        ColumnType::Bool,
                        ColumnType::Timestamp,
                    ];
                    stream.schema = Some(
                        (0..self.below(4))
                            .map(|_| FieldConfig {
                                name: self.name(),
                                ty: *self.pick(&types),
                                nullable: self.chance(),
                            })
                            .collect(),
                    );
                }
                stream.receivers = (0..self.below(3))
                    .map(|_| {
                        if self.chance() {
                            ReceiverConfig::TcpListen(TcpListenConfig {
                                listen: format!("127.0.0.1:{}", self.below(65_536)),
                                max_connections: self.below(5000) as usize,
                                idle_timeout_ms: self.below(1 << 40),
                            })
                        } else {
                            ReceiverConfig::TcpConnect(TcpConnectConfig {
                                address: format!("{}:{}", self.name(), self.below(65_536)),
                                reconnect_min_ms: self.below(1000),
                                reconnect_max_ms: self.below(100_000),
                            })
                        }
                    })
                    .collect();
                stream
            })
            .collect();
        let aggregates = [
            AggregateName::Count,
            AggregateName::Sum,
            AggregateName::Min,
            AggregateName::Max,
            AggregateName::Mean,
            AggregateName::Distinct,
            AggregateName::TopK,
            AggregateName::Last,
        ];
        config.views = (0..self.below(4))
            .map(|_| ViewConfig {
                name: self.name(),
                stream: self.name(),
                key: self.key(0),
                aggregate: *self.pick(&aggregates),
                column: self.chance().then(|| self.name()),
                k: self.chance().then(|| self.below(100) as usize),
                window: self.chance().then(|| super::WindowConfig {
                    length_secs: self.below(100),
                    slide_secs: self.chance().then(|| self.below(100)),
                }),
                ttl_secs: self.chance().then(|| self.below(100)),
            })
            .collect();
        config.auth = match self.below(3) {
            0 => AuthConfig::default(),
            1 => AuthConfig {
                token: Some(format!("tok\"en\\{}", self.name())),
                token_file: None,
            },
            _ => AuthConfig {
                token: None,
                token_file: Some(PathBuf::from(self.name())),
            },
        };
        config
    }
}

#[test]
fn serialized_configs_parse_back_equal() {
    let mut rng = Rng(0x1a31_a000);
    let mut samples = vec![Config::default()];
    let mut empty = Config::default();
    empty.streams.clear();
    empty.views.clear();
    samples.push(empty);
    samples.extend((0..500).map(|_| rng.config()));
    for config in samples {
        let text = toml::to_string(&config).unwrap();
        let back: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, config, "\n{text}");
    }
    // And a valid config survives the full load path too.
    let text = toml::to_string(&Config::default()).unwrap();
    assert_eq!(parse(&text).unwrap(), Config::default());
}
