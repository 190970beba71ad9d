//! The cache proxy's look-ahead. `nix copy` asks for a closure's narinfos level by level and
//! for its NARs two at a time (one thread per core), so over a real network a pull is a
//! chain of round trips, and each of Garage's small block-stored NARs waits out a delayed
//! ACK (PLAN "Pulls"). Told the closure's roots, the proxy walks their narinfos itself, many
//! at a time, then fetches the NARs this host lacks in the order Nix will ask for them
//! ([`ferry_schema::copy_order`]), several at a time and at most [`NAR_BUDGET`] bytes ahead of
//! what Nix has taken. Nix's requests share what is in flight or already here, and fall
//! through to the bucket for anything else.
//!
//! Nothing fetched ahead is trusted more than before: Nix checks every narinfo's signature
//! and every NAR's hash, whichever way the bytes came. What a hostile bucket can make the
//! look-ahead cost is bounded: [`NARINFO_MEMORY`] of narinfos held, [`NAR_BUDGET`] of NARs,
//! each NAR read only up to the size its narinfo declares.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ferry_schema::names::{StorePath, is_nix_hash};
use ferry_schema::narinfo::{NarInfoLinks, links};
use hyper::body::Bytes;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::bucket::ReadBucket;
use super::cache_proxy::{CacheObject, NARINFO_CAP, cache_object};
use ferry_schema::copy_order::nar_order;

/// Narinfos fetched at once while walking a closure: small objects, so the walk is bound
/// by round trips, not bandwidth.
const NARINFO_PARALLEL: usize = 16;

/// NARs fetched ahead at once: enough to hide a round trip and a stalled small object
/// behind the others, few enough not to starve Nix's own requests.
const NAR_PARALLEL: usize = 8;

/// The most NAR bytes held for Nix at once (fetched ahead, not yet taken). A NAR larger than
/// this is never fetched ahead; Nix streams it from the bucket as before.
pub const NAR_BUDGET: u32 = 64 * 1024 * 1024;

/// The most narinfo bytes the proxy keeps. Real narinfos are under 1 KiB, so this holds
/// closures of over 10,000 paths; past it the walk stops and Nix's requests go straight
/// to the bucket.
pub const NARINFO_MEMORY: u64 = 16 * 1024 * 1024;

/// What the bucket answered for a narinfo.
#[derive(Debug, Clone)]
pub enum NarInfo {
    Found(Bytes),
    Missing,
    /// Over [`NARINFO_CAP`]: the size, or "more than" it when the bucket did not say.
    TooLarge(String),
    /// The bucket failed; the detail is for the agent's log.
    Failed(String),
}

/// A NAR fetched ahead, and its share of [`NAR_BUDGET`] (released when the last holder
/// drops it).
#[derive(Debug)]
struct Ahead {
    bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// One slot per NAR key: empty until whoever comes first (look-ahead or Nix) fills it;
/// `None` means "not fetched ahead: stream it from the bucket".
type NarSlot = Arc<OnceCell<Option<Ahead>>>;

/// What the proxy holds for Nix: narinfos and NARs, in flight or here.
#[derive(Debug)]
pub struct Cache {
    narinfos: Mutex<HashMap<String, Arc<OnceCell<NarInfo>>>>,
    narinfo_bytes: AtomicU64,
    nars: Mutex<HashMap<String, NarSlot>>,
    budget: Arc<Semaphore>,
    served_ahead: AtomicU64,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            narinfos: Mutex::default(),
            narinfo_bytes: AtomicU64::new(0),
            nars: Mutex::default(),
            budget: Arc::new(Semaphore::new(NAR_BUDGET as usize)),
            served_ahead: AtomicU64::new(0),
        }
    }
}

/// A lock that survives a panicked holder: the maps hold no invariant a panic could break.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    /// The narinfo `key`: shared with a fetch already in flight or done, else fetched now.
    /// A failure is not kept, so the next request asks the bucket again.
    pub async fn narinfo<B: ReadBucket>(&self, bucket: &B, key: &str) -> NarInfo {
        let cell = {
            let mut map = lock(&self.narinfos);
            match map.get(key) {
                Some(cell) => cell.clone(),
                None if self.narinfo_bytes.load(Ordering::Relaxed) < NARINFO_MEMORY => {
                    map.entry(key.to_owned()).or_default().clone()
                }
                // Full: fetch for this request only.
                None => Arc::default(),
            }
        };
        let answer = cell
            .get_or_init(|| async {
                let answer = fetch_narinfo(bucket, key).await;
                if let NarInfo::Found(bytes) = &answer {
                    self.narinfo_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                answer
            })
            .await
            .clone();
        if matches!(answer, NarInfo::Failed(_)) {
            let mut map = lock(&self.narinfos);
            if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(key);
            }
        }
        answer
    }

    /// The NAR `key` if it was fetched ahead (waiting for it when in flight), taking it out of
    /// the cache; `None` when Nix should stream it from the bucket. Either way the look-ahead
    /// will not fetch it afterwards.
    pub async fn take_nar(&self, key: &str) -> Option<Bytes> {
        let slot = lock(&self.nars).entry(key.to_owned()).or_default().clone();
        let ahead = slot.get_or_init(|| async { None }).await;
        let bytes = ahead.as_ref().map(|a| a.bytes.clone());
        if bytes.is_some() {
            self.served_ahead.fetch_add(1, Ordering::Relaxed);
            // Taken: free its budget once this response no longer needs the slot. A retry
            // streams from the bucket.
            let mut map = lock(&self.nars);
            if map.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                map.insert(key.to_owned(), Arc::new(OnceCell::new_with(Some(None))));
            }
        }
        bytes
    }

    /// NARs Nix got from the look-ahead rather than from the bucket.
    pub fn served_ahead(&self) -> u64 {
        self.served_ahead.load(Ordering::Relaxed)
    }
}

/// GET a narinfo whole, never beyond [`NARINFO_CAP`].
async fn fetch_narinfo<B: ReadBucket>(bucket: &B, key: &str) -> NarInfo {
    let object = match bucket.get_reader(key).await {
        Ok(Some(object)) => object,
        Ok(None) => return NarInfo::Missing,
        Err(e) => return NarInfo::Failed(e.to_string()),
    };
    if let Some(len) = object.len.filter(|len| *len > NARINFO_CAP) {
        return NarInfo::TooLarge(len.to_string());
    }
    let mut bytes = Vec::new();
    if let Err(e) = object
        .body
        .take(NARINFO_CAP + 1)
        .read_to_end(&mut bytes)
        .await
    {
        return NarInfo::Failed(e.to_string());
    }
    if bytes.len() as u64 > NARINFO_CAP {
        return NarInfo::TooLarge(format!("more than {NARINFO_CAP}"));
    }
    NarInfo::Found(Bytes::from(bytes))
}

/// GET a NAR whole if it is exactly the `size` its narinfo declares; `None` otherwise (Nix
/// then streams it and sees for itself what is wrong).
async fn fetch_nar<B: ReadBucket>(
    bucket: &B,
    key: &str,
    size: u64,
    budget: OwnedSemaphorePermit,
) -> Option<Ahead> {
    let object = match bucket.get_reader(key).await {
        Ok(Some(object)) => object,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!("cache proxy: fetching {key} ahead: {e}");
            return None;
        }
    };
    if object.len.is_some_and(|len| len != size) {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).ok()?);
    object
        .body
        .take(size + 1)
        .read_to_end(&mut bytes)
        .await
        .ok()?;
    (bytes.len() as u64 == size).then(|| Ahead {
        bytes: Bytes::from(bytes),
        _budget: budget,
    })
}

/// The hash part of a store path's base name, if it names a narinfo the proxy serves.
fn narinfo_hash(base_name: &str) -> Option<&str> {
    let hash = base_name.split_once('-').map_or(base_name, |(h, _)| h);
    is_nix_hash(hash).then_some(hash)
}

/// Walk the closures of `roots` through the cache, then fetch ahead the NARs of the paths
/// this host lacks, in Nix's order. Runs until done or until the proxy is dropped.
pub async fn prefetch<B: ReadBucket>(bucket: Arc<B>, cache: Arc<Cache>, roots: Vec<String>) {
    let infos = walk(&bucket, &cache, &roots).await;
    let mut missing = BTreeSet::new();
    for (hash, info) in &infos {
        if tokio::fs::symlink_metadata(&info.store_path).await.is_err() {
            missing.insert(hash.clone());
        }
    }
    let references: BTreeMap<String, Vec<String>> = infos
        .iter()
        .map(|(hash, info)| {
            let refs = info.references.iter().filter_map(|r| narinfo_hash(r));
            (hash.clone(), refs.map(str::to_owned).collect())
        })
        .collect();
    let mut fetches = JoinSet::new();
    for hash in nar_order(&references, &missing) {
        let Some(info) = infos.get(&hash) else {
            continue;
        };
        let Some(size) = info.file_size.filter(|s| *s <= u64::from(NAR_BUDGET)) else {
            continue;
        };
        let key = info.url.clone();
        if cache_object(&key) != Some(CacheObject::Nar) || lock(&cache.nars).contains_key(&key) {
            continue;
        }
        while fetches.len() >= NAR_PARALLEL {
            fetches.join_next().await;
        }
        // `size` fits the budget, so it fits a u32.
        let Ok(permit) = cache
            .budget
            .clone()
            .acquire_many_owned(u32::try_from(size).unwrap_or(NAR_BUDGET))
            .await
        else {
            return;
        };
        let slot = lock(&cache.nars).entry(key.clone()).or_default().clone();
        if slot.initialized() {
            continue;
        }
        let bucket = bucket.clone();
        fetches.spawn(async move {
            slot.get_or_init(|| fetch_nar(&*bucket, &key, size, permit))
                .await;
        });
    }
    while fetches.join_next().await.is_some() {}
}

/// Every narinfo reachable from `roots`, [`NARINFO_PARALLEL`] at a time, keyed by hash part;
/// stops early once the cache holds [`NARINFO_MEMORY`] of them. A narinfo whose `StorePath`
/// does not match its key is left out (and not walked).
async fn walk<B: ReadBucket>(
    bucket: &Arc<B>,
    cache: &Arc<Cache>,
    roots: &[String],
) -> BTreeMap<String, NarInfoLinks> {
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut seen = BTreeSet::new();
    for root in roots {
        let Ok(path) = StorePath::parse(root) else {
            continue;
        };
        if let Some(hash) = narinfo_hash(path.base_name())
            && seen.insert(hash.to_owned())
        {
            queue.push_back(hash.to_owned());
        }
    }
    let mut infos = BTreeMap::new();
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < NARINFO_PARALLEL {
            let Some(hash) = queue.pop_front() else {
                break;
            };
            let (bucket, cache) = (bucket.clone(), cache.clone());
            in_flight.spawn(async move {
                let answer = cache.narinfo(&*bucket, &format!("{hash}.narinfo")).await;
                (hash, answer)
            });
        }
        let (hash, answer) = match in_flight.join_next().await {
            None => break,
            Some(Ok(done)) => done,
            Some(Err(_)) => continue,
        };
        let NarInfo::Found(bytes) = answer else {
            continue;
        };
        let Some(info) = std::str::from_utf8(&bytes).ok().and_then(links) else {
            continue;
        };
        let matches = StorePath::parse(&info.store_path).is_ok_and(|p| p.hash_part() == hash);
        if !matches {
            continue;
        }
        for r in &info.references {
            if let Some(h) = narinfo_hash(r)
                && seen.insert(h.to_owned())
            {
                queue.push_back(h.to_owned());
            }
        }
        infos.insert(hash, info);
        if cache.narinfo_bytes.load(Ordering::Relaxed) >= NARINFO_MEMORY {
            break;
        }
    }
    infos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::bucket::{BucketError, Fetched};
    use std::time::Duration;

    /// An in-memory bucket that counts GETs per key and fails the first GET of each key in
    /// `fail_first`.
    #[derive(Default)]
    struct MemBucket {
        objects: HashMap<String, Vec<u8>>,
        gets: Mutex<BTreeMap<String, u32>>,
        fail_first: Mutex<BTreeSet<String>>,
    }

    impl MemBucket {
        fn gets(&self, key: &str) -> u32 {
            lock(&self.gets).get(key).copied().unwrap_or(0)
        }
        fn gets_of(&self, suffix: &str) -> u32 {
            lock(&self.gets)
                .iter()
                .filter(|(k, _)| k.ends_with(suffix))
                .map(|(_, n)| n)
                .sum()
        }
    }

    impl ReadBucket for MemBucket {
        async fn get(&self, key: &str, _: Option<&str>) -> Result<Fetched, BucketError> {
            *lock(&self.gets).entry(key.to_owned()).or_default() += 1;
            if lock(&self.fail_first).remove(key) {
                return Err(BucketError::Unreachable("connection reset".into()));
            }
            Ok(match self.objects.get(key) {
                Some(bytes) => Fetched::Found {
                    bytes: bytes.clone(),
                    etag: None,
                },
                None => Fetched::Missing,
            })
        }
        fn requests(&self) -> u64 {
            lock(&self.gets).values().map(|n| u64::from(*n)).sum()
        }
    }

    /// A fake store path's hash: 32 characters of Nix base-32, none of them on this host.
    fn hash(i: usize) -> String {
        format!("{i:0>32}")
    }

    /// Adds a narinfo for path `i` (missing on this host) with `refs`, padded with
    /// `padding` bytes, and its NAR of `nar_size` bytes (declared as `declared`).
    fn add(b: &mut MemBucket, i: usize, refs: &[usize], nar_size: usize, declared: usize) {
        add_padded(b, i, refs, nar_size, declared, 0);
    }

    fn add_padded(
        b: &mut MemBucket,
        i: usize,
        refs: &[usize],
        nar_size: usize,
        declared: usize,
        padding: usize,
    ) {
        let refs: Vec<String> = refs.iter().map(|r| format!("{}-p{r}", hash(*r))).collect();
        let text = format!(
            "StorePath: /nix/store/{}-p{i}\nURL: nar/n{i}.nar.zst\nFileSize: {declared}\nReferences: {}\nX-Padding: {}\n",
            hash(i),
            refs.join(" "),
            "x".repeat(padding)
        );
        b.objects
            .insert(format!("{}.narinfo", hash(i)), text.into_bytes());
        b.objects
            .insert(format!("nar/n{i}.nar.zst"), vec![i as u8; nar_size]);
    }

    fn root(i: usize) -> Vec<String> {
        vec![format!("/nix/store/{}-p{i}", hash(i))]
    }

    /// Lets every task run until all wait (time is paused: the runtime advances the clock
    /// only once nothing else can run), so what the look-ahead does next is settled.
    async fn settle() {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }

    const MIB: usize = 1024 * 1024;

    #[tokio::test(start_paused = true)]
    async fn fetches_the_closure_ahead_and_nix_takes_it_without_asking_the_bucket() {
        let mut b = MemBucket::default();
        add(&mut b, 0, &[1, 2], 10, 10);
        add(&mut b, 1, &[2], 20, 20);
        add(&mut b, 2, &[], 30, 30);
        let (b, cache) = (Arc::new(b), Arc::new(Cache::default()));
        prefetch(b.clone(), cache.clone(), root(0)).await;
        assert_eq!(b.requests(), 6, "three narinfos and three NARs, once each");
        for i in 0..3 {
            let key = format!("nar/n{i}.nar.zst");
            let got = cache.take_nar(&key).await;
            assert_eq!(got.as_deref(), Some(&vec![i as u8; 10 * (i + 1)][..]));
            // Taken once: a retry streams from the bucket.
            assert_eq!(cache.take_nar(&key).await, None);
            let NarInfo::Found(_) = cache.narinfo(&*b, &format!("{}.narinfo", hash(i))).await
            else {
                panic!("narinfo {i} not found");
            };
        }
        assert_eq!(b.requests(), 6, "Nix's requests were all served ahead");
        assert_eq!(cache.served_ahead(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn holds_at_most_its_budget_of_nars_nix_has_not_taken() {
        let mut b = MemBucket::default();
        // 0 → 1 → 2 → 3 → 4: Nix wants 4 first.
        for i in 0..5 {
            let refs: Vec<usize> = (i + 1..i + 2).filter(|r| *r < 5).collect();
            add(&mut b, i, &refs, 30 * MIB, 30 * MIB);
        }
        let (b, cache) = (Arc::new(b), Arc::new(Cache::default()));
        let ahead = tokio::spawn(prefetch(b.clone(), cache.clone(), root(0)));
        settle().await;
        assert_eq!(b.gets_of(".nar.zst"), 2, "64 MiB holds two 30 MiB NARs");
        assert_eq!(b.gets("nar/n4.nar.zst"), 1, "in Nix's order");
        assert_eq!(b.gets("nar/n3.nar.zst"), 1, "in Nix's order");
        assert!(cache.take_nar("nar/n4.nar.zst").await.is_some());
        settle().await;
        assert_eq!(
            b.gets_of(".nar.zst"),
            3,
            "taking one frees room for the next"
        );
        assert_eq!(b.gets("nar/n2.nar.zst"), 1);
        assert!(!ahead.is_finished());
        for i in (0..4).rev() {
            assert!(cache.take_nar(&format!("nar/n{i}.nar.zst")).await.is_some());
            settle().await;
        }
        ahead.await.unwrap();
        assert_eq!(b.gets_of(".nar.zst"), 5);
    }

    /// The attack: a bucket plants a closure of many near-cap narinfos, so the walk would
    /// hold all of them. It stops at its memory limit instead.
    #[tokio::test(start_paused = true)]
    async fn planted_narinfo_graph_cannot_grow_the_walk_past_its_memory() {
        let mut b = MemBucket::default();
        let leaves: Vec<usize> = (1..=64).collect();
        add(&mut b, 0, &leaves, 1, 1);
        for i in &leaves {
            add_padded(&mut b, *i, &[], 1, 1, NARINFO_CAP as usize - 512);
        }
        let (b, cache) = (Arc::new(b), Arc::new(Cache::default()));
        prefetch(b.clone(), cache.clone(), root(0)).await;
        let limit = NARINFO_MEMORY as usize / MIB + NARINFO_PARALLEL + 1;
        let fetched = b.gets_of(".narinfo") as usize;
        assert!(
            fetched <= limit,
            "{fetched} narinfos fetched, limit {limit}"
        );
        let held: u64 = lock(&cache.narinfos)
            .values()
            .filter_map(|c| match c.get() {
                Some(NarInfo::Found(bytes)) => Some(bytes.len() as u64),
                _ => None,
            })
            .sum();
        assert!(held <= NARINFO_MEMORY + (NARINFO_PARALLEL as u64) * NARINFO_CAP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nar_nix_asked_for_first_is_not_fetched_again() {
        let mut b = MemBucket::default();
        add(&mut b, 0, &[], 10, 10);
        let (b, cache) = (Arc::new(b), Arc::new(Cache::default()));
        assert_eq!(cache.take_nar("nar/n0.nar.zst").await, None);
        prefetch(b.clone(), cache.clone(), root(0)).await;
        assert_eq!(b.gets("nar/n0.nar.zst"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn nars_not_as_declared_or_over_budget_are_left_to_nix() {
        let mut b = MemBucket::default();
        add(&mut b, 0, &[1, 2], 10, 9); // larger than declared
        add(&mut b, 1, &[], 10, 11); // smaller than declared
        add(&mut b, 2, &[], 1, NAR_BUDGET as usize + 1); // would not fit
        let (b, cache) = (Arc::new(b), Arc::new(Cache::default()));
        prefetch(b.clone(), cache.clone(), root(0)).await;
        for i in 0..3 {
            assert_eq!(cache.take_nar(&format!("nar/n{i}.nar.zst")).await, None);
        }
        assert_eq!(b.gets("nar/n2.nar.zst"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_narinfo_is_asked_again_not_kept() {
        let mut b = MemBucket::default();
        add(&mut b, 0, &[], 10, 10);
        let key = format!("{}.narinfo", hash(0));
        lock(&b.fail_first).insert(key.clone());
        let cache = Cache::default();
        assert!(matches!(cache.narinfo(&b, &key).await, NarInfo::Failed(_)));
        assert!(matches!(cache.narinfo(&b, &key).await, NarInfo::Found(_)));
        assert!(matches!(cache.narinfo(&b, &key).await, NarInfo::Found(_)));
        assert_eq!(b.gets(&key), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_narinfo_naming_another_path_is_not_walked() {
        let mut b = MemBucket::default();
        add(&mut b, 0, &[1], 10, 10);
        add(&mut b, 1, &[], 10, 10);
        // Path 0's narinfo claims to be path 5's.
        let text = String::from_utf8(b.objects[&format!("{}.narinfo", hash(0))].clone()).unwrap();
        let forged = text.replace(&format!("{}-p0", hash(0)), &format!("{}-p5", hash(5)));
        b.objects
            .insert(format!("{}.narinfo", hash(0)), forged.into_bytes());
        let b = Arc::new(b);
        prefetch(b.clone(), Arc::new(Cache::default()), root(0)).await;
        assert_eq!(b.requests(), 1);
    }
}
