//! Pull: copy the closures a plan runs into the Nix store, then check that every path of
//! each closure about to run is signed by a trusted key (`closure_trust`; `nix copy` does not
//! look at paths the store already holds). A service whose closure cannot be pulled or is
//! not trusted fails before anything on the host changes.

use std::collections::BTreeMap;

use super::{ApplySettings, Backends};
use crate::backend::bucket::ReadBucket;
use crate::backend::cache_proxy::CacheProxy;
use crate::backend::store::Store;
use crate::closure_trust::untrusted;
use crate::plan::{Action, Plan, ServicePlan};

/// Pull every closure the plan needs in one `nix copy` (through the loopback cache proxy
/// unless the bucket is a directory `nix copy` reads itself); when the batch fails, path by
/// path, so each failure names its service.
pub(super) async fn pull_all<B: ReadBucket, S: Store, D, U, P>(
    plan: &Plan,
    b: &Backends<B, S, D, U, P>,
    failed: &mut BTreeMap<String, String>,
) {
    let pulls: Vec<&ServicePlan> = plan.services.iter().filter(|p| p.pulls()).collect();
    if pulls.is_empty() {
        return;
    }
    let mut paths: Vec<String> = pulls.iter().filter_map(|p| p.to.clone()).collect();
    paths.sort();
    paths.dedup();
    // The proxy lives exactly as long as this function: the duration of the copies.
    let mut _proxy = None;
    let url = match b.bucket.direct_cache_url() {
        Some(url) => url,
        None => match CacheProxy::start_with_prefetch(b.bucket.clone(), &paths).await {
            Ok(proxy) => {
                let url = proxy.url().to_owned();
                _proxy = Some(proxy);
                url
            }
            Err(e) => {
                for p in pulls {
                    failed.insert(
                        p.name.clone(),
                        format!("cannot start the loopback cache proxy: {e}"),
                    );
                }
                return;
            }
        },
    };
    if b.store.pull(&url, &paths).await.is_ok() {
        return;
    }
    // The batch failed: pull path by path to say which service's closure is at fault.
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    for path in &paths {
        if let Err(e) = b.store.pull(&url, std::slice::from_ref(path)).await {
            errors.insert(path.clone(), e.to_string());
        }
    }
    for p in pulls {
        if let Some(e) = p.to.as_ref().and_then(|to| errors.get(to)) {
            failed.insert(p.name.clone(), e.clone());
        }
    }
}

/// Fails every service about to run a closure with a path no trusted key signed, whether it
/// was pulled now or already in the store. One `nix path-info` for all of them; when that
/// fails, one per closure, so the error names the service.
pub(super) async fn check_closures<B, S: Store, D, U, P>(
    plan: &Plan,
    b: &Backends<B, S, D, U, P>,
    settings: &ApplySettings,
    failed: &mut BTreeMap<String, String>,
) {
    let runs: Vec<&ServicePlan> = plan
        .services
        .iter()
        .filter(|p| p.action != Action::Remove && p.job().is_some())
        .filter(|p| p.to.is_some() && !failed.contains_key(&p.name))
        .collect();
    let mut roots: Vec<String> = runs.iter().filter_map(|p| p.to.clone()).collect();
    roots.sort();
    roots.dedup();
    if roots.is_empty() {
        return;
    }
    let verdicts = match b.store.closure_info(&roots).await {
        Ok(infos) => untrusted(&roots, &infos, &settings.trusted_keys),
        Err(_) => {
            let mut verdicts = BTreeMap::new();
            for root in &roots {
                let one = std::slice::from_ref(root);
                match b.store.closure_info(one).await {
                    Ok(infos) => verdicts.extend(untrusted(one, &infos, &settings.trusted_keys)),
                    Err(e) => {
                        verdicts.insert(root.clone(), e.to_string());
                    }
                }
            }
            verdicts
        }
    };
    for p in runs {
        if let Some(why) = p.to.as_ref().and_then(|to| verdicts.get(to)) {
            failed.insert(p.name.clone(), why.clone());
        }
    }
}
