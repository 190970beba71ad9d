//! [`FaultyBucket`]: a [`Bucket`] wrapper that injects faults into every call, for tests of
//! what happens when a store is slow or a writer stalls. Rules match an operation and a key
//! prefix and add a delay before and/or after the real call, or hold the call at a
//! [`Gate`] until the test opens it. The binaries never use it.
//!
//! A delay *before* a call models a slow request that has not reached the store yet; a
//! delay *after* models a reply that is slow to come back, when the store has already done
//! the work (the dangerous case for a writer that trusts what it read).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::bucket::{
    Bucket, BucketError, Fetched, ObjectInfo, ObjectReader, PutCondition, PutOutcome, Timed,
};

/// A bucket operation, as rules and the call log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Bucket::get`].
    Get,
    /// [`Bucket::get_timed`].
    GetTimed,
    /// [`Bucket::get_reader`].
    GetReader,
    /// [`Bucket::exists`].
    Exists,
    /// [`Bucket::put`].
    Put,
    /// [`Bucket::put_if`].
    PutIf,
    /// [`Bucket::put_file`].
    PutFile,
    /// [`Bucket::list`] (the key is the prefix).
    List,
    /// [`Bucket::copy`] (the key is the destination).
    Copy,
    /// [`Bucket::delete`].
    Delete,
    /// [`Bucket::conditional_writes`] (the key is empty).
    Probe,
}

impl Op {
    /// Whether the operation writes or deletes.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Op::Put | Op::PutIf | Op::PutFile | Op::Copy | Op::Delete
        )
    }
}

/// How long a rule waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// Exactly this long.
    Fixed(Duration),
    /// A pseudo-random time in `[min, max]`, from the bucket's seeded generator.
    Between(Duration, Duration),
}

/// Where a gate holds the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Before the real call is made.
    Before,
    /// After the real call returned, before its result goes back to the caller.
    After,
}

/// A point where matching calls wait until the test opens it. The test learns that a call
/// got there with [`Gate::reached`].
#[derive(Debug)]
pub struct Gate {
    reached: Notify,
    open: watch::Sender<bool>,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            reached: Notify::new(),
            open: watch::channel(false).0,
        })
    }

    /// Waits until a call has arrived at the gate (returns at once if one already has).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets every held call, and every later one, through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        self.reached.notify_one();
        let mut rx = self.open.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// What a rule does to a matching call.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Wait before the real call.
    DelayBefore(Delay),
    /// Wait after the real call.
    DelayAfter(Delay),
    /// Hold the call at a gate.
    Hold(At, Arc<Gate>),
}

/// One rule: a fault for the calls of `op` (any operation when `None`) on keys starting
/// with `prefix`, after the first `skip` matching calls, for `times` calls (all when
/// `None`).
#[derive(Debug, Clone)]
pub struct Rule {
    op: Option<Op>,
    prefix: String,
    fault: Fault,
    skip: usize,
    times: Option<usize>,
}

impl Rule {
    /// A rule for `op` on keys starting with `prefix`.
    pub fn on(op: Op, prefix: &str, fault: Fault) -> Self {
        Self {
            op: Some(op),
            prefix: prefix.to_owned(),
            fault,
            skip: 0,
            times: None,
        }
    }

    /// A rule for every call.
    pub fn every(fault: Fault) -> Self {
        Self {
            op: None,
            prefix: String::new(),
            fault,
            skip: 0,
            times: None,
        }
    }

    /// Lets the first `n` matching calls through untouched.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// Applies only to the first `n` matching calls.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        self.op.is_none_or(|o| o == op) && key.starts_with(&self.prefix)
    }
}

/// One call made through the wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The operation.
    pub op: Op,
    /// The key (the prefix of a list, the destination of a copy).
    pub key: String,
    /// When the call was made (before any fault).
    pub at: Instant,
}

/// A bucket whose calls go through fault rules first.
#[derive(Debug)]
pub struct FaultyBucket<B> {
    inner: B,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Call>>,
    rng: AtomicU64,
}

impl<B: Bucket> FaultyBucket<B> {
    /// Wraps `inner` with no rules; `seed` drives [`Delay::Between`] (print it, to replay).
    pub fn new(inner: B, seed: u64) -> Self {
        Self {
            inner,
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            rng: AtomicU64::new(seed),
        }
    }

    /// Adds a rule; rules apply in the order added.
    pub fn rule(&self, rule: Rule) -> &Self {
        self.lock_rules().push(rule);
        self
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock_rules().clear();
    }

    /// Every call so far, in the order they were made.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The wrapped bucket.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn lock_rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        // A panic while holding the lock is a test failure already; go on with the rules.
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The faults that apply to this call (using up limited rules).
    fn faults(&self, op: Op, key: &str) -> Vec<Fault> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(Call {
                op,
                key: key.to_owned(),
                at: Instant::now(),
            });
        }
        let mut rules = self.lock_rules();
        let mut out = Vec::new();
        for rule in rules.iter_mut() {
            if !rule.matches(op, key) || rule.times == Some(0) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            if let Some(n) = rule.times.as_mut() {
                *n -= 1;
            }
            out.push(rule.fault.clone());
        }
        out
    }

    fn pick(&self, delay: Delay) -> Duration {
        match delay {
            Delay::Fixed(d) => d,
            Delay::Between(min, max) => {
                let span = max.saturating_sub(min).as_micros();
                if span == 0 {
                    return min;
                }
                // splitmix64: enough randomness for spreading delays, reproducible by seed.
                let mut z = self
                    .rng
                    .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                    .wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let offset = u128::from(z) % (span + 1);
                min + Duration::from_micros(u64::try_from(offset).unwrap_or(0))
            }
        }
    }

    async fn before(&self, faults: &[Fault]) {
        for f in faults {
            match f {
                Fault::DelayBefore(d) => tokio::time::sleep(self.pick(*d)).await,
                Fault::Hold(At::Before, gate) => gate.pass().await,
                Fault::DelayAfter(_) | Fault::Hold(At::After, _) => {}
            }
        }
    }

    async fn after(&self, faults: &[Fault]) {
        for f in faults {
            match f {
                Fault::DelayAfter(d) => tokio::time::sleep(self.pick(*d)).await,
                Fault::Hold(At::After, gate) => gate.pass().await,
                Fault::DelayBefore(_) | Fault::Hold(At::Before, _) => {}
            }
        }
    }
}

macro_rules! faulty {
    ($self:ident, $op:expr, $key:expr, $call:expr) => {{
        let faults = $self.faults($op, $key);
        $self.before(&faults).await;
        let result = $call;
        $self.after(&faults).await;
        result
    }};
}

impl<B: Bucket> Bucket for FaultyBucket<B> {
    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        faulty!(self, Op::Get, key, self.inner.get(key, if_none_match).await)
    }

    async fn get_timed(&self, key: &str) -> Result<Option<Timed>, BucketError> {
        faulty!(self, Op::GetTimed, key, self.inner.get_timed(key).await)
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, BucketError> {
        faulty!(self, Op::GetReader, key, self.inner.get_reader(key).await)
    }

    async fn exists(&self, key: &str) -> Result<bool, BucketError> {
        faulty!(self, Op::Exists, key, self.inner.exists(key).await)
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        faulty!(self, Op::Put, key, self.inner.put(key, bytes).await)
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: PutCondition,
    ) -> Result<PutOutcome, BucketError> {
        faulty!(
            self,
            Op::PutIf,
            key,
            self.inner.put_if(key, bytes, condition).await
        )
    }

    async fn conditional_writes(&self) -> Result<bool, BucketError> {
        faulty!(self, Op::Probe, "", self.inner.conditional_writes().await)
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), BucketError> {
        faulty!(self, Op::PutFile, key, self.inner.put_file(key, file).await)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        faulty!(self, Op::List, prefix, self.inner.list(prefix).await)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), BucketError> {
        faulty!(self, Op::Copy, to, self.inner.copy(from, to).await)
    }

    async fn delete(&self, key: &str) -> Result<(), BucketError> {
        faulty!(self, Op::Delete, key, self.inner.delete(key).await)
    }

    fn requests(&self) -> u64 {
        self.inner.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DirBucket;

    #[tokio::test]
    async fn delays_and_gates_apply_to_matching_calls_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(FaultyBucket::new(DirBucket::new(dir.path().to_owned()), 7));
        b.rule(Rule::on(
            Op::Put,
            "slow/",
            Fault::DelayBefore(Delay::Fixed(Duration::from_millis(200))),
        ));
        let started = Instant::now();
        b.put("fast", b"x".to_vec()).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        b.put("slow/a", b"x".to_vec()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));

        let gate = Gate::new();
        b.rule(Rule::on(Op::Put, "held", Fault::Hold(At::After, gate.clone())).times(1));
        let writer = {
            let b = b.clone();
            tokio::spawn(async move { b.put("held", b"1".to_vec()).await })
        };
        gate.reached().await;
        // Held after the call: the object is already written, the caller not told yet.
        assert!(b.inner().exists("held").await.unwrap());
        assert!(!writer.is_finished());
        gate.open();
        writer.await.unwrap().unwrap();
        // The rule was for one call only.
        b.put("held", b"2".to_vec()).await.unwrap();
        let ops: Vec<Op> = b.calls().iter().map(|c| c.op).collect();
        assert_eq!(ops, vec![Op::Put; 4]);

        // Skipping: the second matching call is held, not the first.
        let second = Gate::new();
        b.rule(
            Rule::on(Op::Get, "k", Fault::Hold(At::Before, second.clone()))
                .skip(1)
                .times(1),
        );
        b.put("k", b"x".to_vec()).await.unwrap();
        b.get("k", None).await.unwrap();
        let reader = {
            let b = b.clone();
            tokio::spawn(async move { b.get("k", None).await })
        };
        second.reached().await;
        assert!(!reader.is_finished());
        second.open();
        reader.await.unwrap().unwrap();
    }

    #[test]
    fn random_delays_stay_in_range_and_replay_by_seed() {
        let dir = tempfile::tempdir().unwrap();
        let a = FaultyBucket::new(DirBucket::new(dir.path().to_owned()), 42);
        let b = FaultyBucket::new(DirBucket::new(dir.path().to_owned()), 42);
        let range = Delay::Between(Duration::from_millis(5), Duration::from_millis(50));
        let xs: Vec<Duration> = (0..100).map(|_| a.pick(range)).collect();
        let ys: Vec<Duration> = (0..100).map(|_| b.pick(range)).collect();
        assert_eq!(xs, ys);
        assert!(
            xs.iter()
                .all(|d| *d >= Duration::from_millis(5) && *d <= Duration::from_millis(50))
        );
        assert!(xs.iter().any(|d| *d != xs[0]), "not random at all");
    }
}
