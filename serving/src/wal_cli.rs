//! `lamina wal check` and `lamina wal salvage`: the write-ahead log of a
//! stopped server (see docs/operations.md, "A damaged write-ahead log");
//! `lamina state list` and `lamina state drop`: the operators' state.

use std::path::PathBuf;
use std::process::ExitCode;

use lamina_speed::control;
use lamina_speed::wal::{self, Verdict, WalError};

use crate::cli::{StateCommand, WalArgs, WalCommand};

/// Runs a `lamina wal` subcommand.
pub fn run(command: WalCommand) -> ExitCode {
    let (args, salvage) = match command {
        WalCommand::Check(args) => (args, false),
        WalCommand::Salvage(args) => (args, true),
    };
    let dir = match wal_dir(&args) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = if salvage {
        salvage_cmd(&dir)
    } else {
        check_cmd(&dir)
    };
    match result {
        Ok(code) => code,
        Err(WalError::Locked { path }) => {
            eprintln!(
                "lamina wal: the write-ahead log {} is locked: the server is running (stop it \
                 first)",
                path.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lamina wal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a `lamina state` subcommand.
pub fn state(command: StateCommand) -> ExitCode {
    let (args, drop) = match command {
        StateCommand::List(args) => (args, None),
        StateCommand::Drop { operator, args } => (args, Some(operator)),
        // Needs the program: run by `cli`.
        StateCommand::Rebuild { .. } => return ExitCode::from(2),
    };
    let dir = match state_dir(&args) {
        Ok(dir) => dir.join("views"),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !dir.exists() {
        eprintln!("lamina state: no state store at {}", dir.display());
        return ExitCode::FAILURE;
    }
    let store = match crate::store::ViewStore::open(&dir, &[]) {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "lamina state: cannot open the state store {} ({e}); is the server running? stop it first",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let result = match drop {
        None => store.state_operators().map(|ops| {
            if ops.is_empty() {
                println!("no operator has stored state");
            }
            for (name, keys) in ops {
                println!("{name}\t{keys} keys");
            }
        }),
        Some(name) => store.drop_state(&name).map(|n| {
            println!("dropped the state of operator `{name}`: {n} keys; it starts empty at the next start")
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lamina state: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `<state_dir>/wal`, the state dir from the options.
fn wal_dir(args: &WalArgs) -> Result<PathBuf, String> {
    Ok(state_dir(args)?.join("wal"))
}

/// The state dir from the options.
fn state_dir(args: &WalArgs) -> Result<PathBuf, String> {
    let state_dir = match (&args.state_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(path)) => crate::config::Config::load(path)
            .map_err(|e| e.to_string())?
            .storage
            .state_dir
            .clone(),
        (None, None) => crate::config::Config::default().storage.state_dir.clone(),
    };
    Ok(state_dir)
}

fn check_cmd(dir: &std::path::Path) -> Result<ExitCode, WalError> {
    let report = wal::check(dir)?;
    println!(
        "write-ahead log {}: {} segments",
        dir.display(),
        report.segments.len()
    );
    for s in &report.segments {
        let name = s.path.file_name().unwrap_or_default().to_string_lossy();
        let seqs = s.seqs.as_ref().map_or("no intact entry".to_string(), |r| {
            format!("seqs {}..{}", r.start, r.end)
        });
        println!(
            "  {name}: {} bytes, {} intact entries, {} records, {seqs}{}",
            s.bytes,
            s.entries,
            s.records,
            if s.problems.is_empty() {
                ""
            } else {
                ", DAMAGED"
            }
        );
        for p in &s.problems {
            println!("    at byte {}: {}", p.offset, p.reason);
        }
    }
    match &report.verdict {
        Verdict::Clean => {
            println!("OK: every entry verifies.");
            Ok(ExitCode::SUCCESS)
        }
        Verdict::TornTail(t) => {
            println!(
                "OK: only a torn tail at byte {} of {} (an entry cut by a crash, never \
                 acknowledged); the server cuts it when it starts.",
                t.offset,
                t.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Corrupt(e) => {
            println!("DAMAGED: the server refuses to start: {e}");
            println!(
                "With the server stopped, `lamina wal salvage` (same options) keeps every \
                 intact entry and reports what is lost."
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn salvage_cmd(dir: &std::path::Path) -> Result<ExitCode, WalError> {
    let label = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let payload = format!("lost to write-ahead log damage; lamina wal salvage {label}");
    let report = wal::salvage(dir, control::LOST, payload.as_bytes(), &label)?;
    let Some(aside) = &report.moved_to else {
        println!(
            "nothing to salvage: the write-ahead log {} opens as it is (next seq {})",
            dir.display(),
            report.next_seq
        );
        return Ok(ExitCode::SUCCESS);
    };
    let lost: u64 = report.lost.iter().map(|l| l.seqs.end - l.seqs.start).sum();
    eprintln!(
        "!!! LOST: {lost} records in {} ranges could not be recovered from the damaged \
         write-ahead log:",
        report.lost.len()
    );
    for l in &report.lost {
        eprintln!(
            "!!!   seqs {}..{} ({} records): damage in {} at byte {} ({})",
            l.seqs.start,
            l.seqs.end,
            l.seqs.end - l.seqs.start,
            l.path.display(),
            l.offset,
            l.note
        );
    }
    if let Some(l) = &report.lost_at_end {
        eprintln!(
            "!!!   and an unknown number of records from seq {}: damage in {} at byte {} ({})",
            l.seqs.start,
            l.path.display(),
            l.offset,
            l.note
        );
    }
    eprintln!(
        "!!! Lost seqs are kept as markers: the server skips them and logs a warning. \
         Records a micro-batch had already committed before the damage stay counted."
    );
    for s in &report.written {
        println!(
            "wrote {}: {} intact entries ({} records) kept{}",
            s.path.display(),
            s.entries,
            s.records,
            if s.replaces_damaged {
                ""
            } else {
                " (fills a missing segment)"
            }
        );
    }
    println!(
        "damaged segments moved to {} (nothing was deleted); the log now ends at seq {}.",
        aside.display(),
        report.next_seq
    );
    Ok(ExitCode::SUCCESS)
}
