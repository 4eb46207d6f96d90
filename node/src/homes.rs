//! `iris home get|set`: reads this region's copy of the home assignments
//! and, for a change, records it here and queues it for every other region.

use crate::settings::Settings;
use anyhow::{Context as _, bail};
use std::sync::Arc;

/// A change to a user's home region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeChange {
    /// Home the user to this region (one of `federation.regions`).
    Set(String),
    /// Remove the explicit assignment: the user is homed by hash again.
    Clear,
}

/// A user's home region as this region knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The region.
    pub region: String,
    /// Set explicitly (rather than by hash).
    pub explicit: bool,
}

/// Reads (and with `change`, first changes) `tenant/user`'s home region.
pub async fn home(s: &Settings, tenant: &str, user: &str, change: Option<HomeChange>) -> anyhow::Result<Home> {
    let Some((cluster, fed)) = s.cluster.as_ref().and_then(|c| Some((c, c.federation.as_ref()?))) else {
        bail!("the config names no [federation]: a single region has no home regions");
    };
    if !iris_auth::valid_name(user) || !iris_auth::valid_name(tenant) {
        bail!("--user and --tenant must be 1-128 bytes without control characters");
    }
    let topics = iris_kafka::Topics::for_region(&s.region);
    let wanted = [(topics.homes.as_str(), 1), (topics.outbound.as_str(), fed.outbound_partitions as usize)];
    iris_kafka::ensure_topics_compacting(&cluster.kafka, &wanted, &[topics.homes.as_str()])
        .await
        .context("checking the region's topics")?;
    let homes = Arc::new(iris_router::HomeDirectory::new(&s.region, &fed.regions));
    let group = format!("iris.{}.homes.cli", s.region);
    iris_kafka::follow_homes(&cluster.kafka, &topics.homes, &group, homes.clone(), cluster.fetch_wait_ms)
        .await
        .context("reading the home assignments")?;
    let key = iris_envelope::UserKey::new(tenant, user);
    if let Some(change) = change {
        let region = match change {
            HomeChange::Set(r) if !homes.knows(&r) => {
                bail!("unknown region {r:?}; federation.regions is {:?}", fed.regions)
            }
            HomeChange::Set(r) => Some(r),
            HomeChange::Clear => None,
        };
        let link = Arc::new(iris_kafka::OutboundLink::new(&cluster.kafka, &topics)?);
        // A command, not a node: the assignment is stamped by the system clock.
        let federation = iris_router::Federation::new(homes.clone(), link, 1, iris_clock::system());
        federation.set_home(key.clone(), region.map(Arc::from)).await.context("recording the assignment")?;
    }
    let (region, explicit) = homes.home_of(&key);
    Ok(Home { region: region.to_string(), explicit })
}
