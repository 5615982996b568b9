//! DuckDB driven run by run for `lamina bench batch`: one Python process
//! over the benchmark's files, kept open, that times both queries once per
//! `run` line it reads, so that the benchmark can interleave DuckDB's runs
//! with Lamina's. It knows the queries; the files, thread count and S3
//! endpoint come in a JSON config (see `duckdb_config` in `batch.rs`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::{Value, json};

/// The longest wait for one answer (a run of both queries, or the
/// results at the end): a DuckDB that hangs fails the benchmark instead
/// of stalling it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);

const DUCKDB_SCRIPT: &str = r#"
import json, resource, sys, time
import duckdb
cfg = json.loads(sys.argv[1])
con = duckdb.connect()
con.execute(f"SET threads = {cfg['threads']}")
con.execute("SET enable_progress_bar = false")
if not cfg["file_cache"]:
    con.execute("SET enable_external_file_cache = false")
if cfg.get("s3"):
    s3 = cfg["s3"]
    import glob, os, duckdb_extension_httpfs
    ext = glob.glob(os.path.dirname(duckdb_extension_httpfs.__file__) + "/extensions/**/httpfs.duckdb_extension", recursive=True)
    con.execute(f"LOAD '{ext[0]}'")
    con.execute(f"""CREATE SECRET (TYPE s3, KEY_ID '{s3['key']}', SECRET '{s3['secret']}',
        ENDPOINT '{s3['endpoint']}', URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')""")
def files(stream):
    return "[" + ", ".join("'" + f + "'" for f in cfg["files"][stream]) + "]"
queries = {
    "word_counts": f"SELECT word AS key, count(*) AS n FROM (SELECT unnest(string_split(line, ' ')) AS word FROM read_parquet({files('lines')})) GROUP BY word",
    "url_stats": f"SELECT url AS key, count(*) AS n, sum(bytes) AS total FROM read_parquet({files('events')}) GROUP BY url",
}
# One line in per run: `run` times each query once and prints the times;
# `finish` prints the results' sizes and samples, and the peak RSS.
print(json.dumps({"ready": True}), flush=True)
for command in sys.stdin:
    if command.strip() == "run":
        times = {}
        for name, q in queries.items():
            t = time.perf_counter()
            con.execute(f"CREATE OR REPLACE TEMP TABLE result_{name} AS {q}")
            times[name] = (time.perf_counter() - t) * 1e3
        print(json.dumps(times), flush=True)
    else:
        break
out = {"version": duckdb.__version__}
for name in queries:
    keys = con.execute(f"SELECT count(*) FROM result_{name}").fetchone()[0]
    sample = con.execute(f"SELECT * FROM (SELECT * FROM result_{name} USING SAMPLE reservoir(1000 ROWS) REPEATABLE (7)) UNION ALL (SELECT * FROM result_{name} ORDER BY n DESC LIMIT 20)").fetchall()
    out[name] = {"keys": keys, "sample": [[str(r[0])] + [int(x) for x in r[1:]] for r in sample]}
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out), flush=True)
"#;

/// A DuckDB process over the benchmark's files, run by run (see
/// `DUCKDB_SCRIPT`). Killed when dropped.
pub(super) struct Duck {
    child: Child,
    stdin: ChildStdin,
    /// DuckDB's stdout, a line at a time (read on a thread, so that a wait
    /// can time out).
    lines: Receiver<std::io::Result<String>>,
    /// Where its stderr goes (a file, not a pipe nobody reads while it
    /// runs, which would block it once full).
    log: PathBuf,
    /// Each query's times, in order.
    ms: Vec<(String, Vec<f64>)>,
}

impl Drop for Duck {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Duck {
    /// Starts DuckDB with `config` under `python`, its stderr in `log`, and
    /// waits until it is ready.
    pub(super) fn start(python: &Path, config: &Value, log: &Path) -> Result<Duck, String> {
        let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(python)
            .args(["-c", DUCKDB_SCRIPT, &config.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("DuckDB's pipes were not set up".into());
        };
        let (send, lines) = std::sync::mpsc::channel();
        // Ends when DuckDB's stdout closes (it exited or was killed).
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut duck = Duck {
            child,
            stdin,
            lines,
            log: log.to_owned(),
            ms: Vec::new(),
        };
        duck.answer()?;
        Ok(duck)
    }

    /// The next line DuckDB prints, as JSON; the last line of its stderr
    /// when it exited, an error when it took over [`ANSWER_TIMEOUT`].
    fn answer(&mut self) -> Result<Value, String> {
        let line = match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(format!("DuckDB's output: {e}")),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                return Err(format!(
                    "DuckDB did not answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = self.child.wait();
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!(
                    "DuckDB failed: {} (its stderr: {})",
                    err.lines().last().unwrap_or("it exited"),
                    self.log.display()
                ));
            }
        };
        serde_json::from_str(&line).map_err(|e| format!("DuckDB's output: {e}: {line}"))
    }

    fn command(&mut self, command: &str) -> Result<Value, String> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("DuckDB: {e}"))?;
        self.answer()
    }

    /// Runs each query once; its times count when `counted` (else it is
    /// a warm-up, printed only).
    pub(super) fn run(&mut self, counted: bool) -> Result<(), String> {
        let times = self.command("run")?;
        if !counted {
            println!("  duckdb warm-up run: {times}");
            return Ok(());
        }
        for (name, ms) in times.as_object().into_iter().flatten() {
            let ms = ms.as_f64().unwrap_or(0.0);
            match self.ms.iter_mut().find(|(n, _)| n == name) {
                Some((_, all)) => all.push(ms),
                None => self.ms.push((name.clone(), vec![ms])),
            }
        }
        Ok(())
    }

    /// The results' sizes and samples with every query's times: `{version,
    /// peak_rss_mib, <query>: {ms, keys, sample}}`.
    pub(super) fn finish(mut self) -> Result<Value, String> {
        let mut out = self.command("finish")?;
        for (name, ms) in std::mem::take(&mut self.ms) {
            out[name.as_str()]["ms"] = json!(ms);
        }
        Ok(out)
    }
}
