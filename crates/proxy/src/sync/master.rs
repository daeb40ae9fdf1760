//! The master daemon's task: entries from the data plane's queue, drained
//! every [`DRAIN`], into messages, multicast when full or when their first
//! entry has waited [`FLUSH`] (the kernel waits up to 2 s,
//! `IPVS_SYNC_FLUSH_TIME`; a shorter wait loses less at a failover).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{Entry, Message, Refused};
use super::{Daemons, Status, lock, open_retrying, socket};
use crate::config::sync::SyncDaemon;

/// The longest an entry waits in a message that is not full.
const FLUSH: Duration = Duration::from_millis(200);
/// How often the data plane's queue is drained.
const DRAIN: Duration = Duration::from_millis(20);
/// A template is sent at most this often.
const TEMPLATE_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn run(
    d: SyncDaemon,
    mut rx: mpsc::Receiver<Entry>,
    daemons: Arc<Daemons>,
    status: Arc<Mutex<Status>>,
    stop: CancellationToken,
) {
    let maxlen = usize::from(socket::maxlen(&d));
    lock(&status).maxlen = maxlen as u16;
    // Entries queued while there is no socket are dropped, not kept stale.
    let Some(sock) = open_retrying(&d, &status, &stop, socket::sender, || {
        while rx.try_recv().is_ok() {}
    })
    .await
    else {
        return;
    };
    let mut msg = Message::new(d.syncid, maxlen);
    let mut since: Option<Instant> = None;
    let mut templates: HashMap<Entry, Instant> = HashMap::new();
    // The queue is drained on a tick, never awaited: a sender then wakes
    // nothing (no waker is registered), and the data plane's cost of an
    // entry is its copy into the queue. The kernel's master likewise
    // sleeps IPVS_SYNC_SEND_DELAY (20 ms) before it sends.
    let mut tick = tokio::time::interval(DRAIN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        loop {
            let e = match rx.try_recv() {
                Ok(e) => e,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    flush(&sock, &mut msg, &d, maxlen, &daemons).await;
                    return;
                }
            };
            if e.is_template() {
                let mut key = e.clone();
                key.timeout = 0;
                match templates.get(&key) {
                    Some(at) if now.duration_since(*at) < TEMPLATE_EVERY => continue,
                    _ => {}
                }
                if templates.len() > 65_536 {
                    templates.retain(|_, at| now.duration_since(*at) < TEMPLATE_EVERY);
                }
                templates.insert(key, now);
            }
            match msg.push(&e) {
                Ok(()) => {}
                Err(Refused::Full) => {
                    flush(&sock, &mut msg, &d, maxlen, &daemons).await;
                    since = None;
                    let _ = msg.push(&e);
                }
                Err(Refused::Invalid) => continue,
            }
            since.get_or_insert(now);
        }
        if since.is_some_and(|t| now.duration_since(t) >= FLUSH) {
            flush(&sock, &mut msg, &d, maxlen, &daemons).await;
            since = None;
        }
    }
    flush(&sock, &mut msg, &d, maxlen, &daemons).await;
}

/// Sends `msg`, if it holds anything, and starts it again empty.
async fn flush(
    sock: &UdpSocket,
    msg: &mut Message,
    d: &SyncDaemon,
    maxlen: usize,
    daemons: &Daemons,
) {
    if !msg.is_empty() {
        send(sock, msg, daemons).await;
        *msg = Message::new(d.syncid, maxlen);
    }
}

async fn send(sock: &UdpSocket, msg: &Message, daemons: &Daemons) {
    if msg.is_empty() {
        return;
    }
    // A multicast send does not block for long; a refused one is counted
    // and the message dropped, as the kernel's master drops it on error.
    match sock.send(msg.bytes()).await {
        Ok(_) => {
            daemons.stats.sent_messages.fetch_add(1, Relaxed);
            daemons
                .stats
                .sent_entries
                .fetch_add(msg.len() as u64, Relaxed);
        }
        Err(_) => {
            daemons.stats.send_errors.fetch_add(1, Relaxed);
        }
    }
}
