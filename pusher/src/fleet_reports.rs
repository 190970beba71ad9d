//! Reading the hosts' reports from the status store: every `hosts/<host>.json`, parsed, or
//! with why it could not be (a report that cannot be read is shown, never fatal).

use std::collections::BTreeMap;

use anyhow::Result;
use ferry_bucket::{Bucket, Fetched};
use ferry_schema::host_status::{MAX_REPORT_BYTES, parse_report};
use ferry_schema::layout::HOSTS_PREFIX;

use crate::fleet_view::Read;

/// Every host's report in `store`, by host name.
pub async fn read_reports(store: &impl Bucket) -> Result<BTreeMap<String, Read>> {
    let mut reports = BTreeMap::new();
    for object in store.list(HOSTS_PREFIX).await? {
        let Some(host) = object
            .key
            .strip_prefix(HOSTS_PREFIX)
            .and_then(|k| k.strip_suffix(".json"))
            .filter(|h| !h.contains('/'))
        else {
            continue;
        };
        let read = match store.get_bounded(&object.key, None, MAX_REPORT_BYTES).await {
            Ok(Fetched::Found { bytes, .. }) => {
                parse_report(&object.key, host, &bytes).map_err(|e| e.to_string())
            }
            // Deleted between the listing and the read: as if it never reported.
            Ok(Fetched::Missing | Fetched::Unchanged) => continue,
            Err(e) => Err(format!("{}: {e}", object.key)),
        };
        reports.insert(host.to_owned(), read);
    }
    Ok(reports)
}
