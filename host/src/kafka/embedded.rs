//! The embedded broker: librdkafka's in-process mock cluster, speaking the real Kafka protocol on
//! a real TCP port, so `iotstream run` needs no Kafka server and external clients (kcat) can still
//! produce to it and consume from it.
//!
//! The mock cluster keeps only about 5 MB per partition (librdkafka hard-codes it) and drops older
//! messages silently; the topic is created with enough partitions for the consumer, which stays close
//! behind the producer, never to fall that far behind. It keeps nothing on disk: a restart starts
//! from an empty topic.
//!
//! `MockCluster` holds a raw pointer and is neither `Send` nor `Sync`, so it lives on a thread of its
//! own until [`EmbeddedBroker`] is dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use super::KafkaError;

/// A running mock cluster with one topic.
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster and creates `topic` with `partitions` partitions.
    pub fn start(topic: &str, partitions: i32) -> Result<Self, KafkaError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, KafkaError>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topic = topic.to_owned();
        let thread = std::thread::Builder::new()
            .name("iotstream-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.into()));
                        return;
                    }
                };
                if let Err(err) = cluster.create_topic(&topic, partitions, 1) {
                    let _ = ready_tx.send(Err(err.into()));
                    return;
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Hold the cluster until told to stop (or until the handle is gone).
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|err| KafkaError::Embedded(format!("cannot start its thread: {err}")))?;
        let bootstrap_servers =
            ready_rx.recv().map_err(|_| KafkaError::Embedded("its thread ended before it was ready".into()))??;
        Ok(EmbeddedBroker { bootstrap_servers, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The `host:port` list clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
