//! Resilience: failed tasks are recomputed from lineage and results stay
//! exact; lost shuffle output and evicted cache partitions are recomputed;
//! a task that keeps failing fails the job with an error naming the stage and
//! partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lamina::{BoxIter, Context, Error, PartitionSource, TaskContext};

fn ctx(threads: usize) -> Context {
    Context::builder().threads(threads).build().unwrap()
}

/// A source of `parts` partitions of numbers whose reads fail in the ways a
/// test asks for, counting reads per partition.
struct FlakySource {
    parts: usize,
    per_part: u64,
    /// Reads of each partition that fail before one succeeds.
    fail_opens: usize,
    /// Reads that fail half-way through the partition (after the opens).
    fail_midway: usize,
    reads: Arc<Vec<AtomicUsize>>,
}

impl FlakySource {
    fn new(parts: usize, fail_opens: usize, fail_midway: usize) -> (Self, Arc<Vec<AtomicUsize>>) {
        let reads = Arc::new((0..parts).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
        let source = FlakySource {
            parts,
            per_part: 100,
            fail_opens,
            fail_midway,
            reads: Arc::clone(&reads),
        };
        (source, reads)
    }
}

impl PartitionSource for FlakySource {
    type Item = u64;

    fn num_partitions(&self) -> usize {
        self.parts
    }

    fn read<'a>(
        &'a self,
        partition: usize,
        tc: &'a TaskContext,
    ) -> lamina::Result<BoxIter<'a, u64>> {
        let n = self.reads[partition].fetch_add(1, Ordering::SeqCst);
        if n < self.fail_opens {
            return Err(Error::execution(format!(
                "partition {partition}: transient open failure {n}"
            )));
        }
        let base = partition as u64 * self.per_part;
        let fail_midway = n < self.fail_opens + self.fail_midway;
        let rows = (0..self.per_part).map(move |i| {
            if fail_midway && i == self.per_part / 2 {
                Err(Error::execution("connection reset half-way"))
            } else {
                Ok(base + i)
            }
        });
        Ok(tc.stop_on_error(rows))
    }
}

fn expected_sum(parts: usize) -> u64 {
    (0..parts as u64 * 100).sum()
}

#[test]
fn failed_opens_are_retried_and_results_exact() {
    let ctx = ctx(2);
    let (source, reads) = FlakySource::new(6, 2, 0);
    let rdd = ctx.from_source(source);
    assert_eq!(rdd.fold(0, |a, b| a + b).unwrap(), expected_sum(6));
    assert!(
        reads.iter().all(|r| r.load(Ordering::SeqCst) == 3),
        "two failures then success per partition"
    );
}

#[test]
fn failure_half_way_through_a_partition_discards_the_partial_result() {
    let ctx = ctx(2);
    let (source, reads) = FlakySource::new(4, 0, 1);
    // Through a shuffle, so a partial map output would double-count if it
    // were published.
    let sums = ctx
        .from_source(source)
        .map(|x| (x % 3, x))
        .reduce_by_key(|a, b| a + b)
        .collect()
        .unwrap();
    assert_eq!(sums.iter().map(|p| p.1).sum::<u64>(), expected_sum(4));
    assert!(reads.iter().all(|r| r.load(Ordering::SeqCst) == 2));
}

#[test]
fn closure_that_panics_on_first_attempt_only() {
    let ctx = ctx(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let data: Vec<u64> = (0..1000).collect();
    let out = ctx
        .parallelize(data.clone(), 4)
        .map(move |x| {
            if x == 500 && c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("injected panic on the first attempt");
            }
            (x % 7, 1u64)
        })
        .reduce_by_key(|a, b| a + b)
        .collect()
        .unwrap();
    assert_eq!(out.iter().map(|p| p.1).sum::<u64>(), 1000);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn persistent_failure_fails_the_job_naming_stage_and_partition() {
    let ctx = Context::builder()
        .threads(2)
        .max_task_attempts(3)
        .build()
        .unwrap();
    let (source, reads) = FlakySource::new(3, usize::MAX, 0);
    let err = ctx.from_source(source).count().unwrap_err();
    match &err {
        Error::TaskFailed {
            partition,
            attempts,
            rdd,
            ..
        } => {
            assert_eq!(*attempts, 3);
            assert!(*partition < 3);
            assert!(rdd.starts_with("source#"), "{rdd}");
        }
        other => panic!("expected TaskFailed, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("stage")
            && msg.contains("partition")
            && msg.contains("transient open failure"),
        "{msg}"
    );
    assert!(reads.iter().any(|r| r.load(Ordering::SeqCst) == 3));
}

#[test]
fn plan_errors_are_not_retried() {
    let ctx = ctx(1);
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let err = ctx
        .parallelize(vec![1, 2, 3], 1)
        .run(move |_, _| -> lamina::Result<()> {
            a.fetch_add(1, Ordering::SeqCst);
            Err(Error::plan("column `x` does not exist"))
        })
        .unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert!(err.to_string().contains("column `x`"), "{err}");
}

#[test]
fn lost_shuffle_output_is_recomputed_from_lineage() {
    let ctx = ctx(2);
    let (source, reads) = FlakySource::new(4, 0, 0);
    let sums = ctx
        .from_source(source)
        .map(|x| (x % 5, x))
        .reduce_by_key(|a, b| a + b);
    let first: u64 = sums.collect().unwrap().iter().map(|p| p.1).sum();
    assert_eq!(first, expected_sum(4));
    assert!(reads.iter().all(|r| r.load(Ordering::SeqCst) == 1));

    // Lose the map output of partition 2 of every shuffle (as if its
    // executor died); only that partition is read again.
    for shuffle in 0..4 {
        ctx.shuffle_store().remove_map_output(shuffle, 2);
    }
    let again: u64 = sums.collect().unwrap().iter().map(|p| p.1).sum();
    assert_eq!(again, expected_sum(4));
    let counts: Vec<usize> = reads.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, vec![1, 1, 2, 1]);
}

#[test]
fn lost_output_of_an_upstream_shuffle_in_a_two_shuffle_job() {
    let ctx = ctx(2);
    let (source, reads) = FlakySource::new(3, 0, 0);
    let by_mod = ctx
        .from_source(source)
        .map(|x| (x % 10, x))
        .reduce_by_key(|a, b| a + b);
    // A second shuffle on top of the first.
    let by_parity = by_mod.map(|(k, v)| (k % 2, v)).reduce_by_key(|a, b| a + b);
    let total = |v: Vec<(u64, u64)>| v.iter().map(|p| p.1).sum::<u64>();
    assert_eq!(total(by_parity.collect().unwrap()), expected_sum(3));
    // Drop everything: both shuffles must be rebuilt in order.
    for shuffle in 0..8 {
        for m in 0..3 {
            ctx.shuffle_store().remove_map_output(shuffle, m);
        }
    }
    assert_eq!(total(by_parity.collect().unwrap()), expected_sum(3));
    assert!(reads.iter().all(|r| r.load(Ordering::SeqCst) == 2));
}

#[test]
fn cached_partitions_are_reused_and_evicted_ones_recomputed() {
    let ctx = ctx(2);
    let (source, reads) = FlakySource::new(4, 0, 0);
    let cached = ctx.from_source(source).map(|x| x * 2).cache();
    let sum = |r: &lamina::Rdd<u64>| r.fold(0, |a, b| a + b).unwrap();
    assert_eq!(sum(&cached), 2 * expected_sum(4));
    assert_eq!(sum(&cached), 2 * expected_sum(4));
    assert!(
        reads.iter().all(|r| r.load(Ordering::SeqCst) == 1),
        "second job read the cache"
    );
    assert!(ctx.partition_cache().evict(cached.id(), 1));
    assert_eq!(sum(&cached), 2 * expected_sum(4));
    let counts: Vec<usize> = reads.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(
        counts,
        vec![1, 2, 1, 1],
        "only the evicted partition is recomputed"
    );
    let stats = ctx.partition_cache().stats();
    assert_eq!(stats.partitions, 4);
    drop(cached);
    assert_eq!(
        ctx.partition_cache().stats().partitions,
        0,
        "dropping the dataset frees its cache"
    );
}

#[test]
fn cache_budget_smaller_than_the_data_still_gives_exact_results() {
    // Room for one partition of 100 u64s at a time.
    let ctx = Context::builder()
        .threads(2)
        .cache_capacity_bytes(1000)
        .build()
        .unwrap();
    let (source, _reads) = FlakySource::new(4, 0, 0);
    let cached = ctx.from_source(source).cache();
    for _ in 0..3 {
        assert_eq!(cached.fold(0, |a, b| a + b).unwrap(), expected_sum(4));
    }
    let stats = ctx.partition_cache().stats();
    assert!(stats.partitions <= 1 && stats.evictions > 0, "{stats:?}");
}

#[test]
fn async_job_does_not_block_the_runtime() {
    let ctx = ctx(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rdd = ctx
        .parallelize((0..10_000u64).collect(), 4)
        .map(|x| (x % 3, x))
        .reduce_by_key(|a, b| a + b);
    let out = rt.block_on(async {
        // The single runtime thread stays free to run this ticker while the
        // job runs on the pool.
        let ticker = async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        };
        let (out, ()) = tokio::join!(rdd.collect_async(), ticker);
        out
    });
    assert_eq!(
        out.unwrap().iter().map(|p| p.1).sum::<u64>(),
        (0..10_000u64).sum::<u64>()
    );
}

#[test]
fn cancelled_job_ends_with_an_error() {
    let ctx = ctx(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let rdd = ctx.parallelize((0..64u32).collect(), 64).map(move |x| {
        s.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(5));
        x
    });
    let job = rdd.run_async(|_, it| Ok(it.count()));
    job.cancel_token().cancel();
    let err = rt.block_on(job).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(
        started.load(Ordering::SeqCst) < 64,
        "cancellation skipped the remaining tasks"
    );
}

#[test]
fn streamed_results_are_emitted_once_per_partition_even_when_tasks_fail_half_way() {
    let ctx = ctx(2);
    // Every partition fails half-way through its first read: its partial
    // result must never be emitted.
    let (source, reads) = FlakySource::new(6, 1, 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let emitted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&emitted);
    let job = ctx
        .from_source(source)
        .map(|x| (x % 5, x))
        .reduce_by_key(|a, b| a + b)
        .run_each_async(
            |_, it| Ok(it.collect::<Vec<_>>()),
            move |partition, rows| sink.lock().unwrap().push((partition, rows)),
        );
    rt.block_on(job).unwrap();
    let mut emitted = emitted.lock().unwrap().clone();
    emitted.sort_by_key(|(p, _)| *p);
    let partitions: Vec<usize> = emitted.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        partitions,
        (0..6).collect::<Vec<_>>(),
        "each partition once"
    );
    let total: u64 = emitted.iter().flat_map(|(_, r)| r).map(|(_, v)| v).sum();
    assert_eq!(total, expected_sum(6));
    assert!(reads.iter().all(|r| r.load(Ordering::SeqCst) == 3));
}

#[test]
fn a_result_task_that_fails_half_way_emits_only_its_successful_attempt() {
    let ctx = ctx(2);
    let (source, reads) = FlakySource::new(4, 0, 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let emitted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&emitted);
    // No shuffle: the flaky read happens in the result stage itself.
    let job = ctx.from_source(source).run_each_async(
        |_, it| Ok(it.collect::<Vec<u64>>()),
        move |partition, rows| sink.lock().unwrap().push((partition, rows.len())),
    );
    rt.block_on(job).unwrap();
    let mut emitted = emitted.lock().unwrap().clone();
    emitted.sort();
    assert_eq!(emitted, vec![(0, 100), (1, 100), (2, 100), (3, 100)]);
    assert!(reads.iter().all(|r| r.load(Ordering::SeqCst) == 2));
}
