//! Bodies over the wire: a typed [`Backend`] over a backend of bytes.
//!
//! Brokers carry bytes; handlers want values. [`Typed`] wraps any
//! `Backend<Body = Vec<u8>>` and is itself a `Backend<Body = T>`: sends encode with a
//! [`Codec`], receives decode with it, and every other call passes through. The worker pool,
//! the lease guard and the dead-letter tools then run on typed messages unchanged.
//!
//! Codecs: [`Utf8`] (strings, always built), `Json` (any serde type, behind the cargo
//! feature `json`, as the tutorial's `SendJSON`), or one of your own.
//!
//! What becomes of a body that does not decode, or a value that does not encode, is
//! documented on [`Typed`].

use super::contract::{Accepted, Backend, BackendError, Capabilities, Handle, Incoming, Outgoing};
use super::contract::{Feature, Refused};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Turns values into bytes and back.
///
/// ```
/// use visq::{Codec, DecodeError, EncodeError};
///
/// /// Little-endian `u64`s.
/// struct U64s;
/// impl Codec<u64> for U64s {
///     fn encode(&self, value: &u64) -> Result<Vec<u8>, EncodeError> {
///         Ok(value.to_le_bytes().to_vec())
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<u64, DecodeError> {
///         let bytes = bytes.try_into().map_err(|_| DecodeError::new("not 8 bytes"))?;
///         Ok(u64::from_le_bytes(bytes))
///     }
/// }
/// assert_eq!(U64s.decode(&U64s.encode(&7).unwrap()), Ok(7));
/// assert!(U64s.decode(b"short").is_err());
/// ```
pub trait Codec<T>: Send + Sync {
    /// The bytes for `value`. Fails only for a value the format cannot express.
    fn encode(&self, value: &T) -> Result<Vec<u8>, EncodeError>;
    /// The value in `bytes`, or why they are not one.
    fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError>;
}

/// Why bytes are not a value of the expected type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl DecodeError {
    /// An error saying `why`.
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Why a value cannot be written in a codec's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError(String);

impl EncodeError {
    /// An error saying `why`.
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Strings as UTF-8 bytes; bytes that are not UTF-8 do not decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8;

impl Codec<String> for Utf8 {
    fn encode(&self, value: &String) -> Result<Vec<u8>, EncodeError> {
        Ok(value.as_bytes().to_vec())
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, DecodeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|error| DecodeError::new(format!("not UTF-8: {error}")))
    }
}

/// Any serde type as JSON (`serde_json`). Needs the cargo feature `json`.
#[cfg(feature = "json")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json;

#[cfg(feature = "json")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> for Json {
    fn encode(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        serde_json::to_vec(value).map_err(|error| EncodeError::new(error.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        serde_json::from_slice(bytes).map_err(|error| DecodeError::new(error.to_string()))
    }
}

/// A backend of `T` over a backend of bytes `B`, with codec `C`: sends encode, receives
/// decode, every other call passes through.
///
/// # A body that does not decode
///
/// It never reaches a handler and never crashes a worker. [`Backend::receive`] on a [`Typed`]
/// takes it out of the batch and:
///
/// * sends it to the dead-letter queue with the decode error as the reason
///   ([`Backend::dead_letter`]: `"body does not decode: ..."`);
/// * where the backend has no dead-letter queue ([`BackendError::Unsupported`]), releases it:
///   it stays on the queue for a fixed consumer, and comes back. Give such a backend a
///   dead-letter queue, or it is received (and counted) again and again: at most once per
///   receive's `wait`, as a receive that released one sleeps out its wait (no hot loop).
///
/// Either way it is counted: [`Typed::undecodable`] (all of them) and
/// [`Typed::undecodable_released`] (those released for want of a dead-letter queue). A
/// settlement that fails (the lease was lost meanwhile) leaves the message to come back and be
/// counted again.
///
/// # A value that does not encode
///
/// (A JSON map with non-string keys, say.) The send is refused with [`BackendError::Fatal`]
/// naming the error, and the value handed back in its [`Refused`]; nothing reaches the
/// backend.
///
/// `T` is a parameter of its own because one codec (as `Json`, feature `json`) serves many types.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use visq::{Backend, Outgoing, Queue, Typed, Utf8};
///
/// let bytes: Arc<Queue<Vec<u8>>> = Arc::new(Queue::builder().build()?);
/// let typed: Typed<Queue<Vec<u8>>, Utf8, String> = Typed::new(bytes.clone(), Utf8);
/// typed.send(Outgoing::new("hello".to_string())).unwrap();
/// bytes.send(vec![0xff]).unwrap(); // not UTF-8: it will not reach a handler
///
/// let mut out = Vec::new();
/// typed.receive(&mut out, 10, Duration::ZERO, None)?;
/// assert_eq!(out.len(), 1);
/// assert_eq!(out[0].body, "hello");
/// // No dead-letter queue here: released, and counted.
/// assert_eq!((typed.undecodable(), typed.undecodable_released()), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Typed<B: ?Sized, C, T> {
    inner: Arc<B>,
    codec: Arc<C>,
    undecodable: Arc<Counters>,
    body: PhantomData<fn(T) -> T>,
}

/// Undecodable bodies, shared by a [`Typed`] and the typed view of its dead-letter queue.
#[derive(Debug, Default)]
struct Counters {
    seen: AtomicU64,
    released: AtomicU64,
}

impl<B: ?Sized, C, T> Typed<B, C, T>
where
    B: Backend<Body = Vec<u8>>,
    C: Codec<T>,
{
    /// `inner`, with bodies encoded and decoded by `codec`.
    pub fn new(inner: Arc<B>, codec: C) -> Self {
        Self::sharing(inner, Arc::new(codec), Arc::default())
    }

    fn sharing(inner: Arc<B>, codec: Arc<C>, undecodable: Arc<Counters>) -> Self {
        Self {
            inner,
            codec,
            undecodable,
            body: PhantomData,
        }
    }

    /// The backend of bytes underneath.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    /// Bodies received that did not decode (total), whatever became of them; the typed view
    /// of the dead-letter queue ([`Backend::dead_letter_queue`]) shares this count.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.seen.load(Ordering::Relaxed)
    }

    /// Of those, the ones released because the backend has no dead-letter queue (total).
    pub fn undecodable_released(&self) -> u64 {
        self.undecodable.released.load(Ordering::Relaxed)
    }

    /// Takes an undecodable body off the backend's hands: to the dead-letter queue with
    /// `error` as the reason, or released where there is none; counted either way. Returns
    /// whether it released it.
    fn set_aside(&self, handle: &Handle, error: &DecodeError) -> bool {
        self.undecodable.seen.fetch_add(1, Ordering::Relaxed);
        let reason = format!("body does not decode: {error}");
        if let Err(BackendError::Unsupported(Feature::DeadLetter)) =
            self.inner.dead_letter(handle, &reason)
        {
            self.undecodable.released.fetch_add(1, Ordering::Relaxed);
            // A refusal means the lease is gone already: the message comes back by itself.
            let _ = self.inner.release(handle);
            return true;
        }
        // Any other refusal (a lost lease, a transient failure) leaves the message to come
        // back when its lease runs out, and be counted again.
        false
    }
}

impl<B: ?Sized, C, T> Backend for Typed<B, C, T>
where
    B: Backend<Body = Vec<u8>> + 'static,
    C: Codec<T> + 'static,
    T: 'static,
{
    type Body = T;

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Encodes every entry; one that does not encode is refused with
    /// [`BackendError::Fatal`] and its value handed back, the others are sent in one call.
    fn send_batch(&self, batch: Vec<Outgoing<T>>) -> Vec<Result<Accepted, Refused<T>>> {
        let mut values = Vec::with_capacity(batch.len());
        let mut encoded = Vec::with_capacity(batch.len());
        let mut refusals = Vec::with_capacity(batch.len());
        for entry in batch {
            match self.codec.encode(&entry.body) {
                Ok(bytes) => {
                    refusals.push(None);
                    encoded.push(entry.map_body(|value| {
                        values.push(value);
                        bytes
                    }));
                }
                Err(error) => refusals.push(Some(Refused {
                    error: BackendError::Fatal(format!("body does not encode: {error}")),
                    body: entry.body,
                })),
            }
        }
        let mut sent = self.inner.send_batch(encoded).into_iter();
        let mut values = values.into_iter();
        refusals
            .into_iter()
            .filter_map(|refused| match refused {
                Some(refused) => Some(Err(refused)),
                None => {
                    let value = values.next()?;
                    Some(match sent.next() {
                        Some(Ok(accepted)) => Ok(accepted),
                        Some(Err(refused)) => Err(Refused {
                            error: refused.error,
                            body: value,
                        }),
                        None => Err(Refused {
                            error: BackendError::Fatal(
                                "the backend gave no result for this entry".into(),
                            ),
                            body: value,
                        }),
                    })
                }
            })
            .collect()
    }

    /// Receives from the backend and decodes; bodies that do not decode are set aside as the
    /// [`Typed`] docs say and not appended, so fewer than the backend returned may arrive.
    /// A call whose bodies all failed to decode keeps the long poll's promise: it receives
    /// again for what is left of `wait`, or, if it released one (no dead-letter queue: it is
    /// visible again at once), sleeps what is left of `wait` and returns 0, so that a poison
    /// message costs one receive per `wait`, never a hot loop.
    fn receive(
        &self,
        out: &mut Vec<Incoming<T>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        let deadline = Instant::now().checked_add(wait);
        let left = || deadline.map_or(wait, |end| end.saturating_duration_since(Instant::now()));
        let mut raw = Vec::with_capacity(max.min(self.inner.capabilities().max_batch));
        let before = out.len();
        loop {
            self.inner.receive(&mut raw, max, left(), visibility)?;
            if raw.is_empty() {
                return Ok(0);
            }
            let mut released = false;
            for incoming in raw.drain(..) {
                match self.codec.decode(&incoming.body) {
                    Ok(value) => out.push(incoming.map_body(|_| value)),
                    Err(error) => released |= self.set_aside(&incoming.handle, &error),
                }
            }
            if out.len() > before || left().is_zero() {
                return Ok(out.len() - before);
            }
            if released {
                thread::sleep(left());
                return Ok(0);
            }
        }
    }

    fn delete(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.inner.delete(receipt)
    }

    fn delete_batch(&self, receipts: &[Handle]) -> Vec<Result<(), BackendError>> {
        self.inner.delete_batch(receipts)
    }

    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError> {
        self.inner.change_visibility(receipt, timeout)
    }

    fn change_visibility_batch(
        &self,
        entries: &[(Handle, Duration)],
    ) -> Vec<Result<(), BackendError>> {
        self.inner.change_visibility_batch(entries)
    }

    fn release(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.inner.release(receipt)
    }

    fn hand_back(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.inner.hand_back(receipt)
    }

    fn dead_letter(&self, receipt: &Handle, reason: &str) -> Result<(), BackendError> {
        self.inner.dead_letter(receipt, reason)
    }

    /// The backend's dead-letter queue, typed with the same codec (undecodable bodies there
    /// count in this [`Typed`]'s counters).
    fn dead_letter_queue(&self) -> Option<Arc<dyn Backend<Body = T>>> {
        let dlq = self.inner.dead_letter_queue()?;
        let typed: Typed<dyn Backend<Body = Vec<u8>>, C, T> =
            Typed::sharing(dlq, self.codec.clone(), self.undecodable.clone());
        Some(Arc::new(typed))
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        self.inner.dead_letter_limit()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl<B: ?Sized, C, T> fmt::Debug for Typed<B, C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("undecodable", &self.undecodable)
            .finish_non_exhaustive()
    }
}
