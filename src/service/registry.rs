//! The instance registry: which instance owns which partition, and where its
//! HTTP endpoints are, so that any instance can answer for any lead (as
//! Kafka Streams' interactive queries use `application.server`).
//!
//! Each instance publishes, to a small compacted topic
//! (`<group_id>-instances`, one partition, key = the instance id), its
//! `advertised_url` and the partitions it owns once they are restored, again
//! after every rebalance, and a tombstone when it stops. Every instance reads
//! the topic from the beginning in a thread of its own and keeps the latest
//! entry per instance. Entries hold no lead data.
//!
//! An instance that crashes leaves its entry behind until its partitions'
//! next owners publish theirs: a partition claimed by several entries
//! belongs to the most recent claim (by the publisher's clock, then
//! instance id).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::http::{Peer, Peers, Route};
use super::kafka::{self, ReaderCtx};
use crate::config::{Config, Partitioner};

/// One instance's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub instance_id: String,
    /// Base URL of its HTTP endpoints, e.g. `http://leadscore-1.leadscore:9464`.
    pub url: String,
    /// The partitions it owns (restored), ascending.
    pub partitions: Vec<i32>,
    /// When it published this (ms since the epoch, its own clock).
    pub at_ms: i64,
}

/// The entries read so far.
#[derive(Debug, Default)]
pub struct Table {
    entries: BTreeMap<String, Entry>,
}

impl Table {
    /// Applies a record of the registry topic (`None`: a tombstone).
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(id) = std::str::from_utf8(key) else {
            return;
        };
        match value.map(serde_json::from_slice::<Entry>) {
            None => {
                self.entries.remove(id);
            }
            Some(Ok(e)) if e.instance_id == id => {
                self.entries.insert(id.to_string(), e);
            }
            Some(_) => tracing::warn!(instance = id, "unreadable registry entry; ignored"),
        }
    }

    /// The entry that owns `partition`: the most recent claim.
    pub fn owner(&self, partition: i32) -> Option<&Entry> {
        self.entries
            .values()
            .filter(|e| e.partitions.binary_search(&partition).is_ok())
            .max_by(|a, b| (a.at_ms, &a.instance_id).cmp(&(b.at_ms, &b.instance_id)))
    }

    /// The owner of each of `partitions` partitions (`None`: unknown).
    pub fn owners(&self, partitions: usize) -> Vec<Option<&Entry>> {
        (0..partitions as i32).map(|p| self.owner(p)).collect()
    }
}

fn peer(e: &Entry) -> Peer {
    Peer {
        instance_id: e.instance_id.clone(),
        url: e.url.clone(),
        partitions: e.partitions.clone(),
    }
}

enum Command {
    Publish { partitions: Vec<i32>, url: String },
    Stop,
}

/// The registry of a running service: its reader and publisher thread.
pub struct Registry {
    table: Arc<RwLock<Table>>,
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    /// The input's partition count.
    pub partitions: usize,
    pub instance_id: String,
    partitioner: Partitioner,
    /// What this instance published last: the partitions it serves.
    own: RwLock<Vec<i32>>,
    /// This instance's URL, once its endpoints are up.
    url: std::sync::OnceLock<String>,
}

impl Registry {
    /// Starts the thread that reads the registry topic (created beforehand:
    /// [`kafka::ensure_topics`]) and publishes this instance's entries.
    pub fn start(cfg: &Config, partitions: usize) -> Result<Registry, KafkaError> {
        let topic = cfg.instances_topic();
        let consumer: BaseConsumer<ReaderCtx> =
            kafka::reader(cfg, kafka::Reading::Registry).create_with_context(ReaderCtx)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let producer: BaseProducer = kafka::producer(cfg, None, 5).create()?;
        let table = Arc::new(RwLock::new(Table::default()));
        let (commands, rx) = mpsc::channel();
        let id = cfg.kafka.instance_id.clone();
        let t = Arc::clone(&table);
        let thread = thread::Builder::new()
            .name("registry".into())
            .spawn(move || run(consumer, producer, &topic, &id, &t, &rx))
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Registry {
            table,
            commands,
            thread: Some(thread),
            partitions,
            instance_id: cfg.kafka.instance_id.clone(),
            partitioner: cfg.kafka.partitioner,
            own: RwLock::new(Vec::new()),
            url: std::sync::OnceLock::new(),
        })
    }

    /// Publishes the partitions this instance now owns.
    pub fn publish(&self, mut partitions: Vec<i32>) {
        partitions.sort_unstable();
        partitions.dedup();
        partitions.clone_into(&mut self.own.write().expect("registry lock"));
        let url = self.url.get().cloned().unwrap_or_default();
        let _ = self.commands.send(Command::Publish { partitions, url });
    }

    /// Sets the URL this instance publishes (see [`Config::advertised_url`]).
    pub fn set_url(&self, url: String) {
        let _ = self.url.set(url);
    }

    /// Which instance serves the lead `id`: this one when it serves the
    /// lead's partition, else the registry's owner.
    pub fn route(&self, id: &str) -> Route {
        let p = self.partitioner.partition(id.as_bytes(), self.partitions);
        if self.own.read().expect("registry lock").contains(&p) {
            return Route::Local;
        }
        self.read(|t| match t.owner(p) {
            Some(e) if e.instance_id != self.instance_id => Route::Remote(peer(e)),
            // Our own entry, older than what we serve now, or nobody's.
            _ => Route::Unowned { partition: p },
        })
    }

    /// The other instances serving partitions, and the partitions nobody
    /// serves now.
    pub fn peers(&self) -> Peers {
        let own = self.own.read().expect("registry lock").clone();
        self.read(|t| {
            let mut out = Peers::default();
            for (p, owner) in t.owners(self.partitions).into_iter().enumerate() {
                let p = p as i32;
                if own.contains(&p) {
                    continue;
                }
                match owner {
                    Some(e) if e.instance_id != self.instance_id => {
                        match out
                            .others
                            .iter_mut()
                            .find(|o| o.instance_id == e.instance_id)
                        {
                            Some(o) => o.partitions.push(p),
                            None => out.others.push(Peer {
                                partitions: vec![p],
                                ..peer(e)
                            }),
                        }
                    }
                    _ => out.unowned.push(p),
                }
            }
            out
        })
    }

    /// Reads the table.
    pub fn read<T>(&self, f: impl FnOnce(&Table) -> T) -> T {
        f(&self.table.read().expect("registry lock"))
    }
}

impl Drop for Registry {
    /// Withdraws this instance's entry (a tombstone) and stops the thread.
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    consumer: BaseConsumer<ReaderCtx>,
    producer: BaseProducer,
    topic: &str,
    id: &str,
    table: &RwLock<Table>,
    commands: &Receiver<Command>,
) {
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Publish { partitions, url }) => {
                    let entry = Entry {
                        instance_id: id.to_string(),
                        url,
                        partitions,
                        at_ms: super::wall_micros() / 1000,
                    };
                    let value = serde_json::to_vec(&entry).expect("an entry serializes");
                    send(&producer, BaseRecord::to(topic).key(id).payload(&value));
                }
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    send(&producer, BaseRecord::<str, [u8]>::to(topic).key(id));
                    let _ = producer.flush(Duration::from_secs(5));
                    kafka::close(consumer);
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        producer.poll(Duration::ZERO);
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => table
                .write()
                .expect("registry lock")
                .apply(m.key().unwrap_or_default(), m.payload()),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "reading the instance registry"),
        }
    }
}

fn send(producer: &BaseProducer, record: BaseRecord<'_, str, [u8]>) {
    if let Err((e, _)) = producer.send(record) {
        tracing::warn!(error = %e, "cannot publish to the instance registry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, partitions: &[i32], at_ms: i64) -> Vec<u8> {
        serde_json::to_vec(&Entry {
            instance_id: id.into(),
            url: format!("http://{id}:9464"),
            partitions: partitions.to_vec(),
            at_ms,
        })
        .unwrap()
    }

    #[test]
    fn the_latest_claim_of_a_partition_wins_and_tombstones_withdraw() {
        let mut t = Table::default();
        t.apply(b"a", Some(&entry("a", &[0, 1, 2, 3], 100)));
        assert_eq!(t.owner(2).unwrap().instance_id, "a");
        // b takes 2 and 3 after a rebalance, before a has published again.
        t.apply(b"b", Some(&entry("b", &[2, 3], 200)));
        let owners: Vec<_> = t
            .owners(4)
            .iter()
            .map(|e| e.map(|e| e.instance_id.as_str()))
            .collect();
        assert_eq!(owners, [Some("a"), Some("a"), Some("b"), Some("b")]);
        t.apply(b"a", Some(&entry("a", &[0, 1], 300)));
        assert_eq!(t.owner(3).unwrap().instance_id, "b");
        t.apply(b"b", None);
        assert!(t.owner(3).is_none(), "a stopped instance owns nothing");
        assert_eq!(t.owner(1).unwrap().url, "http://a:9464");
    }

    #[test]
    fn an_entry_under_another_key_or_unreadable_is_ignored() {
        let mut t = Table::default();
        t.apply(b"x", Some(&entry("a", &[0], 1)));
        t.apply(b"y", Some(b"{not json"));
        assert!(t.owner(0).is_none());
    }
}
