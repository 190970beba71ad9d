//! A route as the agent hands it to the proxy: route computation (`routes`) makes them, the
//! Caddy backend writes them.

use serde_json::Value;

/// One route Ferry wants in Caddy: its `@id` and the full JSON Caddy stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `ferry-<service>`.
    pub id: String,
    /// The service it sends traffic to.
    pub service: String,
    /// The domain it matches.
    pub domain: String,
    /// The route object, `@id` included.
    pub value: Value,
}
