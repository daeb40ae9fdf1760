//! The discovery loop: every `global.dns.interval` (and at once after a
//! configuration with new entries is applied), every entry's name is
//! resolved, all at once, and each answer is applied to its service
//! ([`crate::Proxy::apply_resolution`]). Every second, servers that left
//! DNS and have no connection left are removed.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Answer, Event, Resolver};
use crate::config::Target;
use crate::proxy::{Inner, Proxy};

/// How often leaving servers are looked at.
const SWEEP: Duration = Duration::from_secs(1);

/// Runs until `stop`, or until the proxy is gone.
pub(crate) async fn run(proxy: Weak<Inner>, stop: CancellationToken) {
    let mut resolver: Option<Resolver> = None;
    let mut resolver_error: Option<String> = None;
    let mut next = Instant::now();
    let Some(changes) = Proxy::upgrade(&proxy).map(|p| p.config_changes()) else {
        return;
    };
    loop {
        let Some(p) = Proxy::upgrade(&proxy) else {
            return;
        };
        let config = p.config();
        // Which services use each name.
        let mut targets: BTreeMap<Target, Vec<String>> = BTreeMap::new();
        for s in &config.services {
            for d in &s.discovery {
                targets
                    .entry(d.target.clone())
                    .or_default()
                    .push(s.name.clone());
            }
        }
        let due = Instant::now() >= next;
        if due && !targets.is_empty() {
            if resolver
                .as_ref()
                .is_none_or(|r| *r.settings() != config.global.dns)
            {
                resolver = match Resolver::new(&config.global.dns) {
                    Ok(r) => {
                        resolver_error = None;
                        Some(r)
                    }
                    Err(e) => {
                        if resolver_error.as_deref() != Some(e.as_str()) {
                            warn!(error = %e, "DNS discovery has no resolver: discovered servers stay as they are");
                        }
                        resolver_error = Some(e);
                        None
                    }
                };
            }
            let answers = match &resolver {
                Some(r) => resolve_all(r, targets.keys().cloned()).await,
                None => targets
                    .keys()
                    .map(|t| {
                        (
                            t.clone(),
                            Answer::Failed(resolver_error.clone().unwrap_or_default()),
                        )
                    })
                    .collect(),
            };
            let now = Instant::now();
            for (target, answer) in answers {
                for service in targets.get(&target).into_iter().flatten() {
                    if let Some(done) = p.apply_resolution(service, &target, answer.clone(), now) {
                        log(service, &target, done);
                    }
                }
            }
            next = Instant::now() + config.global.dns.interval;
        } else if due {
            next = Instant::now() + config.global.dns.interval;
        }
        p.sweep_leaving();
        drop(p);
        let wait = next.saturating_duration_since(Instant::now()).min(SWEEP);
        tokio::select! {
            () = stop.cancelled() => return,
            () = changes.notified() => {
                // New entries are resolved at once.
                next = Instant::now();
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Resolves every target at once.
async fn resolve_all(r: &Resolver, targets: impl Iterator<Item = Target>) -> Vec<(Target, Answer)> {
    let mut set = JoinSet::new();
    for t in targets {
        let r = r.clone();
        set.spawn(async move {
            let a = r.resolve(&t).await;
            (t, a)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(pair) = done {
            out.push(pair);
        }
    }
    out
}

fn log(
    service: &str,
    target: &Target,
    (event, servers, leaving, changed): (Event, usize, usize, bool),
) {
    match event {
        Event::None => {}
        Event::Failing(why) => {
            warn!(service, entry = %target, error = %why, servers, "DNS: no good answer; the servers in force stay");
        }
        Event::Recovered => info!(service, entry = %target, servers, "DNS: answers again"),
        Event::Emptied(why) => {
            warn!(service, entry = %target, error = %why, "DNS: the name has had no address for the hold time: its servers leave");
        }
    }
    if changed {
        info!(service, entry = %target, servers, leaving, "DNS: real servers changed");
    }
}
