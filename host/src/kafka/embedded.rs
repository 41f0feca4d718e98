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
//! own until [`EmbeddedBroker`] is dropped; [`EmbeddedBroker::set_up`] takes its broker down and
//! back up from any thread, for fault drills (the fault-injection tests use it).

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use super::KafkaError;

/// What the broker's thread is asked to do.
enum Command {
    /// Take the broker down (false) or bring it back (true), and answer.
    SetUp(bool, mpsc::Sender<Result<(), KafkaError>>),
}

/// A running mock cluster with one topic.
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster and creates `topic` with `partitions` partitions.
    pub fn start(topic: &str, partitions: i32) -> Result<Self, KafkaError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, KafkaError>>();
        let (command_tx, command_rx) = mpsc::channel::<Command>();
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
                // Hold the cluster until the handle is gone, doing what it asks.
                while let Ok(command) = command_rx.recv() {
                    match command {
                        Command::SetUp(up, reply) => {
                            let result = if up { cluster.broker_up(1) } else { cluster.broker_down(1) };
                            let _ = reply.send(result.map_err(KafkaError::from));
                        }
                    }
                }
                drop(cluster);
            })
            .map_err(|err| KafkaError::Embedded(format!("cannot start its thread: {err}")))?;
        let bootstrap_servers =
            ready_rx.recv().map_err(|_| KafkaError::Embedded("its thread ended before it was ready".into()))??;
        Ok(EmbeddedBroker { bootstrap_servers, commands: Some(command_tx), thread: Some(thread) })
    }

    /// The `host:port` list clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Takes the broker down (`false`: its connections close and new ones are refused, as when a
    /// broker process dies) or brings it back (`true`), keeping its log.
    pub fn set_up(&self, up: bool) -> Result<(), KafkaError> {
        let gone = || KafkaError::Embedded("its thread has ended".into());
        let (reply_tx, reply_rx) = mpsc::channel();
        self.commands.as_ref().ok_or_else(gone)?.send(Command::SetUp(up, reply_tx)).map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
