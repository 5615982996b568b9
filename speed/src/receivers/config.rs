//! The registry of receivers: every receiver type's config struct lives
//! beside its receiver (in its own file) and builds it; this file lists
//! them, one line each, in [`registry!`]. Adding a receiver is its file
//! (the receiver, its `*Config` with `validate` and `build`) plus one line
//! here — the config parser, its error messages and the server pick it up
//! from the registry (see docs/receivers.md).

use serde::{Deserialize, Serialize};

use super::{Receiver, ReceiverError};

/// One problem found by a receiver config's `validate`: the key inside the
/// receiver's table (e.g. `listen`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, relative to the receiver's table.
    pub key: String,
    /// What is wrong, naming the value and what is expected. One line.
    pub message: String,
}

impl Problem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A problem unless `value` is a socket address `IP:PORT` (a listen
    /// address); `example` shows one in the message.
    pub fn socket_addr(key: &str, value: &str, example: &str) -> Option<Problem> {
        value.parse::<std::net::SocketAddr>().is_err().then(|| {
            Problem::new(
                key,
                format!(
                    "{value:?} is not a socket address (expected IP:PORT, like {example} or [::1]:{})",
                    example.rsplit(':').next().unwrap_or("8080")
                ),
            )
        })
    }

    /// A problem unless `value` is in `range` (the config's wording).
    pub fn range<T: PartialOrd + std::fmt::Display>(
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Option<Problem> {
        (!range.contains(&value)).then(|| {
            Problem::new(
                key,
                format!(
                    "{value} is out of range ({}..={})",
                    range.start(),
                    range.end()
                ),
            )
        })
    }
}

/// What a receiver's config struct provides.
pub trait BuildReceiver {
    /// Checks the settings without touching the network.
    fn validate(&self) -> Vec<Problem>;

    /// Builds the receiver. Listeners bind here, so that an address in use
    /// is a start-up error naming it.
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Config`] for settings that cannot work,
    /// [`ReceiverError::Bind`] when a listener cannot bind.
    fn build(&self) -> Building<'_>;

    /// Whether the receiver hands in records with their source's metadata
    /// ([`crate::envelope`]): the stream then has the source columns.
    fn has_source_columns(&self) -> bool {
        false
    }
}

/// A receiver being built (see [`BuildReceiver::build`]).
pub type Building<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Box<dyn Receiver>, ReceiverError>> + Send + 'a>,
>;

/// Calls a generic function with a receiver type's config struct (for the
/// config parser's per-type checks: unknown keys, type errors).
pub trait ConfigVisitor {
    /// What the visit returns.
    type Out;
    /// Visits config struct `T`.
    fn visit<T: serde::de::DeserializeOwned + Serialize + 'static>(&mut self) -> Self::Out;
}

/// Declares [`ReceiverConfig`]: one line per receiver type,
/// `"type name" => Variant(ConfigStruct)`.
macro_rules! registry {
    ($($(#[$doc:meta])* $name:literal => $variant:ident($config:ty)),+ $(,)?) => {
        /// One `[[stream.receiver]]`, chosen by its `type` key.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum ReceiverConfig {
            $($(#[$doc])* $variant($config),)+
        }

        impl ReceiverConfig {
            /// The `type` names, in registry order.
            pub const TYPES: &'static [&'static str] = &[$($name),+];

            /// This receiver's `type` name.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(ReceiverConfig::$variant(_) => $name,)+
                }
            }

            /// Checks the settings (see [`BuildReceiver::validate`]).
            pub fn validate(&self) -> Vec<Problem> {
                match self {
                    $(ReceiverConfig::$variant(c) => c.validate(),)+
                }
            }

            /// Whether the stream gets the source columns (see
            /// [`BuildReceiver::has_source_columns`]).
            pub fn has_source_columns(&self) -> bool {
                match self {
                    $(ReceiverConfig::$variant(c) => c.has_source_columns(),)+
                }
            }

            /// Builds the receiver (see [`BuildReceiver::build`]).
            ///
            /// # Errors
            ///
            /// As [`BuildReceiver::build`].
            pub async fn build(&self) -> Result<Box<dyn Receiver>, ReceiverError> {
                match self {
                    $(ReceiverConfig::$variant(c) => c.build().await,)+
                }
            }

            /// Calls `visitor` with the config struct of type `name`;
            /// `None` for a name no receiver has.
            pub fn visit_type<V: ConfigVisitor>(name: &str, visitor: &mut V) -> Option<V::Out> {
                match name {
                    $($name => Some(visitor.visit::<$config>()),)+
                    _ => None,
                }
            }
        }
    };
}

registry! {
    /// `type = "tcp_listen"`: newline-delimited records on a listening
    /// socket, each line acknowledged once it is in the write-ahead log.
    "tcp_listen" => TcpListen(super::tcp_listen::TcpListenConfig),
    /// `type = "tcp_connect"`: newline-delimited records read from a
    /// socket this server connects to (and reconnects to when it drops).
    "tcp_connect" => TcpConnect(super::tcp_connect::TcpConnectConfig),
    /// `type = "kafka"`: a topic's partitions read from Kafka brokers,
    /// their offsets committed with the micro-batches.
    "kafka" => Kafka(super::kafka::KafkaConfig),
    /// `type = "flume_avro"`: Flume's Avro RPC source protocol (Flume's
    /// AvroSink and RPC client), each batch acknowledged once durable.
    "flume_avro" => FlumeAvro(super::flume_avro::FlumeAvroConfig),
    /// `type = "files"`: every new file of a directory, read once,
    /// exactly (Spark's `textFileStream`).
    "files" => Files(super::files::FilesConfig),
}
