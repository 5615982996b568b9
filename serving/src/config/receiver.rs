//! `[[stream.receiver]]`: the push and pull sources feeding a stream.
//!
//! Each receiver's config struct lives beside the receiver in the speed
//! layer (`speed/src/receivers/<type>.rs`) and is listed once in its
//! registry (`speed/src/receivers/config.rs`): adding a receiver needs no
//! change here. This module checks a receiver's table for the config
//! parser — unknown keys and type errors per receiver type, through the
//! registry, and the receiver's own `validate`.

use lamina_speed::receivers::ConfigVisitor;
pub use lamina_speed::receivers::{
    BuildReceiver, ReceiverConfig, TcpConnectConfig, TcpListenConfig,
};

use super::error::{ConfigError, Report};
use super::parse::Document;

/// Keys of a receiver's table (at `key`) that its type does not have.
/// Serde reads internally tagged enums through a buffer that hides unknown
/// keys, so each type's table is checked on its own.
pub(super) fn unknown_keys(
    receiver: &ReceiverConfig,
    doc: &Document<'_>,
    key: &str,
) -> Vec<ConfigError> {
    struct Unknown<'a, 'd> {
        doc: &'a Document<'d>,
        key: &'a str,
    }
    impl ConfigVisitor for Unknown<'_, '_> {
        type Out = Vec<ConfigError>;
        fn visit<T: serde::de::DeserializeOwned + serde::Serialize + 'static>(
            &mut self,
        ) -> Self::Out {
            self.doc.unknown_keys_in::<T>(self.key, "type")
        }
    }
    ReceiverConfig::visit_type(receiver.type_name(), &mut Unknown { doc, key }).unwrap_or_default()
}

/// Serde reports a bad value inside a receiver table at the table (the
/// buffer of the tagged enum has no spans); reading the table (at `key`)
/// again as its type names the key itself.
pub(super) fn refine_type_error(doc: &Document<'_>, key: &str) -> Option<ConfigError> {
    struct Refine<'a, 'd> {
        doc: &'a Document<'d>,
        key: &'a str,
    }
    impl ConfigVisitor for Refine<'_, '_> {
        type Out = Option<ConfigError>;
        fn visit<T: serde::de::DeserializeOwned + serde::Serialize + 'static>(
            &mut self,
        ) -> Self::Out {
            self.doc.type_error_in::<T>(self.key, "type")
        }
    }
    let name = doc.str_at(&format!("{key}.type"))?;
    ReceiverConfig::visit_type(name, &mut Refine { doc, key }).flatten()
}

/// The receiver's own checks, at `key` (e.g. `stream[0].receiver[1]`).
pub(super) fn validate(receiver: &ReceiverConfig, key: &str, report: &mut Report) {
    for p in receiver.validate() {
        report.push(format!("{key}.{}", p.key), p.message);
    }
}
