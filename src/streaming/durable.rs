//! Operator state as data: how stateful operators hand their changes to
//! whoever makes them durable, and take their state back after a restart.
//!
//! Every stateful operator ([`update_state_by_key`], [`map_with_state`])
//! has a **name**, unique in its program, and keeps its state per key as
//! CBOR (serde): never closures, so a new build of the program restarts from
//! the state an older one wrote, as long as the types still decode. Each
//! batch, an operator records the keys it changed — the key and the new
//! state (with the batch time), or a removal — as a [`StateDelta`] in the
//! batch's [`BatchOutcome::state`](super::BatchOutcome::state). The server
//! commits those changes in the micro-batch's one transaction, together with
//! the views' deltas and the log position the batch read up to; at start-up
//! it hands each operator its committed state back
//! ([`StreamingContext::restore_state`](super::StreamingContext::restore_state))
//! before the first batch replays the log. So after `kill -9` the state is
//! exactly that of the last committed batch, and the replay applies every
//! later record once.
//!
//! A state that no longer decodes (its Rust type changed incompatibly) is an
//! error naming the operator and the types at restore time, never a silent
//! reset.
//!
//! [`update_state_by_key`]: super::DStream::update_state_by_key
//! [`map_with_state`]: super::DStream::map_with_state

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::rdd::Data;

/// Bounds of a key or a state an operator keeps durably: [`Data`] that
/// serde can encode and decode.
pub trait StateData: Data + Serialize + DeserializeOwned {}
impl<T: Data + Serialize + DeserializeOwned> StateData for T {}

/// Encodes a key or a state as CBOR.
///
/// # Errors
///
/// [`Error::Execution`] when the value's `Serialize` fails.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out)
        .map_err(|e| Error::execution(format!("cannot encode a state as CBOR: {e}")))?;
    Ok(out)
}

/// Decodes a key or a state written by [`encode`].
///
/// # Errors
///
/// What did not decode, as the decoder says it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

/// The stored form of one key's state: `[state, batch time in ms]` as CBOR
/// — the time of the batch that last changed it (for `map_with_state`, of
/// the key's last data, which is what its idle timeout counts from).
pub type Stored<S> = (S, i64);

/// One key's change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The key, CBOR.
    pub key: Vec<u8>,
    /// The new [`Stored`] state, CBOR; `None` when the key's state was
    /// removed.
    pub state: Option<Vec<u8>>,
}

/// The changes one operator made in one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDelta {
    /// The operator (see [`StateInfo::name`]).
    pub operator: String,
    /// Each changed key once.
    pub changes: Vec<StateChange>,
}

/// What a stateful operator is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    /// Its name, unique in the program: by default `{kind}-{n}` where `n`
    /// counts the program's stateful operators in declaration order; the
    /// view's name once the state is served
    /// ([`serve_state_as`](super::DStream::serve_state_as)), or the name a
    /// [`StateSpec`](super::state::StateSpec) gives.
    pub name: String,
    /// `update_state_by_key` or `map_with_state`.
    pub kind: &'static str,
    /// The key's Rust type.
    pub key_type: &'static str,
    /// The state's Rust type.
    pub state_type: &'static str,
}

/// A stateful operator's state served as a view (see
/// [`serve_state_as`](super::DStream::serve_state_as)): the serving layer
/// answers each key's committed state — no batch-layer merge, the state
/// *is* the view.
#[derive(Debug, Clone)]
pub struct ServedState {
    pub(crate) info: StateInfo,
    pub(crate) inputs: std::sync::Arc<[super::dstream::InputId]>,
}

impl ServedState {
    /// The view's name, which is also the operator's.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The operator.
    pub fn info(&self) -> &StateInfo {
        &self.info
    }

    /// The input streams the state is computed from.
    pub fn input_ids(&self) -> &[super::dstream::InputId] {
        &self.inputs
    }
}

/// An operator whose state can be taken back after a restart.
pub(crate) trait DurableState: Send + Sync {
    /// What it is.
    fn info(&self) -> StateInfo;
    /// Renames it (checked unique by the context).
    fn set_name(&self, name: String);
    /// Replaces its state by `entries` (CBOR key, CBOR [`Stored`] state);
    /// the number of keys.
    fn restore(&self, entries: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<usize>;
}

/// The name of an operator, shared between the operator and its handle.
pub(crate) type SharedName = std::sync::Arc<std::sync::Mutex<String>>;

pub(crate) fn name_of(name: &SharedName) -> String {
    name.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Decodes one stored entry of operator `info`, with an error that says
/// which operator and which types did not fit.
pub(crate) fn decode_entry<K: DeserializeOwned, S: DeserializeOwned>(
    info: &StateInfo,
    key: &[u8],
    value: &[u8],
) -> Result<(K, Stored<S>)> {
    let k: K = decode(key).map_err(|e| mismatch(info, "key", info.key_type, &e))?;
    let s: Stored<S> = decode(value).map_err(|e| mismatch(info, "state", info.state_type, &e))?;
    Ok((k, s))
}

fn mismatch(info: &StateInfo, what: &str, ty: &str, detail: &str) -> Error {
    Error::plan(format!(
        "the stored state of operator `{}` ({}) does not decode: a stored {what} is not a `{ty}` ({detail}); the program's types changed since the state was written",
        info.name, info.kind
    ))
}

/// Whether `name` can name an operator's state: 1 to 128 of
/// `[A-Za-z0-9_.-]` (the same rule as view names, which state views share).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_changed_type_names_the_operator() {
        let info = StateInfo {
            name: "running".into(),
            kind: "update_state_by_key",
            key_type: "alloc::string::String",
            state_type: "i64",
        };
        let (k, v) = (
            encode(&"be".to_string()).unwrap(),
            encode(&(7i64, 1000i64)).unwrap(),
        );
        let (key, (state, time)) = decode_entry::<String, i64>(&info, &k, &v).unwrap();
        assert_eq!((key.as_str(), state, time), ("be", 7, 1000));
        let err = decode_entry::<String, String>(&info, &k, &v).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("operator `running`") && text.contains("state is not a `i64`"),
            "{text}"
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("running_counts") && valid_name("map_with_state-0"));
        assert!(!valid_name("") && !valid_name("a/b") && !valid_name("a\0b"));
        assert!(!valid_name(&"x".repeat(129)));
    }
}
