//! The protocol's field types, each read and written in exactly one place.
//!
//! A [`Reader`] walks the body of one frame that has fully arrived. Every length and count
//! it reads is checked against the bytes that remain in that body before anything is
//! allocated, so a hostile length can cost at most the frame the peer already sent.
//! A [`Writer`] appends the same field types to an output buffer and refuses values that
//! do not fit their length prefix rather than truncating them.

use bytes::{BufMut, BytesMut};
use corvid_core::{Message, MessageId, ReceiptStatus, Token};

use crate::error::EncodeError;

/// Encoded size of the smallest possible `message`: two u64, a u8, two empty `str` and an
/// empty `text`. Bounds the count of a `list<message>`.
pub(crate) const MIN_MESSAGE_SIZE: usize = 8 + 8 + 1 + 2 + 2 + 4;

/// Why the body of a frame could not be read, named after the field where it went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FieldError {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("`{field}` needs {needed} byte(s) but only {remaining} remain")]
    Truncated {
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("`{field}` is a bool but holds {value}")]
    BadBool { field: &'static str, value: u8 },
    #[error("`{field}` is an optional value but its tag is {value}")]
    BadTag { field: &'static str, value: u8 },
    #[error("`{field}` is not valid UTF-8")]
    BadUtf8 { field: &'static str },
    #[error("`{field}` holds {value}, which is not one of its values")]
    BadEnum { field: &'static str, value: u64 },
    #[error("`{field}` counts {count} item(s) but only {remaining} byte(s) remain")]
    CountTooLarge {
        field: &'static str,
        count: usize,
        remaining: usize,
    },
    #[error("a request id of {0} where an event must carry 0")]
    EventWithRequestId(u32),
    #[error("request id 0 is reserved for events and errors about the connection")]
    ReservedRequestId,
    #[error(
        "`{field}` value {value} needs protocol version {needed}; this connection speaks {version}"
    )]
    NeedsVersion {
        field: &'static str,
        value: u64,
        needed: u16,
        version: u16,
    },
    #[error("{0} byte(s) after the last field")]
    Trailing(usize),
}

pub(crate) type ReadResult<T> = Result<T, FieldError>;

/// Reads fields from the body of one complete frame.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Reader<'a> {
        Reader { rest: body }
    }

    fn take(&mut self, field: &'static str, needed: usize) -> ReadResult<&'a [u8]> {
        if needed > self.rest.len() {
            return Err(FieldError::Truncated {
                field,
                needed,
                remaining: self.rest.len(),
            });
        }
        let (taken, rest) = self.rest.split_at(needed);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> ReadResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> ReadResult<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> ReadResult<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> ReadResult<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> ReadResult<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> ReadResult<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(FieldError::BadBool { field, value }),
        }
    }

    pub(crate) fn token(&mut self, field: &'static str) -> ReadResult<Token> {
        Ok(Token(self.array(field)?))
    }

    pub(crate) fn message_id(&mut self, field: &'static str) -> ReadResult<MessageId> {
        Ok(MessageId(self.u64(field)?))
    }

    /// A `str`: u16 byte length, then UTF-8.
    pub(crate) fn str(&mut self, field: &'static str) -> ReadResult<String> {
        let len = usize::from(self.u16(field)?);
        self.utf8(field, len)
    }

    /// A `text`: u32 byte length, then UTF-8.
    pub(crate) fn text(&mut self, field: &'static str) -> ReadResult<String> {
        let len = self.u32(field)?;
        // A length that does not even fit in usize certainly exceeds what remains.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.utf8(field, len)
    }

    fn utf8(&mut self, field: &'static str, len: usize) -> ReadResult<String> {
        // `take` checks the length against the bytes that remain before anything is copied.
        let bytes = self.take(field, len)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(FieldError::BadUtf8 { field }),
        }
    }

    /// An `opt<T>`: tag 0 for absent, or tag 1 followed by the value.
    pub(crate) fn opt<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> ReadResult<T>,
    ) -> ReadResult<Option<T>> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            value => Err(FieldError::BadTag { field, value }),
        }
    }

    /// A `list<T>`: u16 count, then the items. `min_item_size` is the fewest bytes one item
    /// can take; a count that could not fit in the bytes remaining is refused before any
    /// allocation, so the vector's capacity is bounded by the frame's length.
    pub(crate) fn list<T>(
        &mut self,
        field: &'static str,
        min_item_size: usize,
        mut read: impl FnMut(&mut Self) -> ReadResult<T>,
    ) -> ReadResult<Vec<T>> {
        let count = usize::from(self.u16(field)?);
        let remaining = self.rest.len();
        if count > remaining / min_item_size.max(1) {
            return Err(FieldError::CountTooLarge {
                field,
                count,
                remaining,
            });
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }

    /// A `message`: id, sent_at, status, from, to, text.
    pub(crate) fn message(&mut self) -> ReadResult<Message> {
        let id = self.message_id("message.id")?;
        let sent_at = self.u64("message.sent_at")?;
        let status = self.receipt_status("message.status")?;
        let from = self.str("message.from")?;
        let to = self.str("message.to")?;
        let text = self.text("message.text")?;
        Ok(Message {
            id,
            from,
            to,
            text,
            sent_at,
            status,
        })
    }

    pub(crate) fn receipt_status(&mut self, field: &'static str) -> ReadResult<ReceiptStatus> {
        let value = self.u8(field)?;
        ReceiptStatus::from_u8(value).ok_or(FieldError::BadEnum {
            field,
            value: value.into(),
        })
    }

    /// Succeeds only if every byte of the body has been read.
    pub(crate) fn finish(self) -> ReadResult<()> {
        match self.rest.len() {
            0 => Ok(()),
            trailing => Err(FieldError::Trailing(trailing)),
        }
    }
}

/// Appends fields to an output buffer.
pub(crate) struct Writer<'a> {
    dst: &'a mut BytesMut,
}

pub(crate) type WriteResult = Result<(), EncodeError>;

impl<'a> Writer<'a> {
    pub(crate) fn new(dst: &'a mut BytesMut) -> Writer<'a> {
        Writer { dst }
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.dst.put_u8(value);
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.dst.put_u16(value);
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.dst.put_u32(value);
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.dst.put_u64(value);
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.dst.put_u8(u8::from(value));
    }

    pub(crate) fn token(&mut self, token: &Token) {
        self.dst.put_slice(&token.0);
    }

    pub(crate) fn str(&mut self, field: &'static str, value: &str) -> WriteResult {
        let len = u16::try_from(value.len()).map_err(|_| EncodeError::TooLong {
            field,
            len: value.len(),
            max: u16::MAX.into(),
        })?;
        self.dst.put_u16(len);
        self.dst.put_slice(value.as_bytes());
        Ok(())
    }

    pub(crate) fn text(&mut self, field: &'static str, value: &str) -> WriteResult {
        let len = u32::try_from(value.len()).map_err(|_| EncodeError::TooLong {
            field,
            len: value.len(),
            max: u32::MAX as usize,
        })?;
        self.dst.put_u32(len);
        self.dst.put_slice(value.as_bytes());
        Ok(())
    }

    pub(crate) fn opt<T>(
        &mut self,
        value: Option<&T>,
        write: impl FnOnce(&mut Self, &T) -> WriteResult,
    ) -> WriteResult {
        match value {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(value) => {
                self.u8(1);
                write(self, value)
            }
        }
    }

    pub(crate) fn opt_u32(&mut self, value: Option<u32>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.u32(value);
            }
        }
    }

    pub(crate) fn opt_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.u64(value);
            }
        }
    }

    pub(crate) fn list<T>(
        &mut self,
        field: &'static str,
        items: &[T],
        mut write: impl FnMut(&mut Self, &T) -> WriteResult,
    ) -> WriteResult {
        let count = u16::try_from(items.len()).map_err(|_| EncodeError::TooLong {
            field,
            len: items.len(),
            max: u16::MAX.into(),
        })?;
        self.u16(count);
        for item in items {
            write(self, item)?;
        }
        Ok(())
    }

    pub(crate) fn message(&mut self, message: &Message) -> WriteResult {
        self.u64(message.id.0);
        self.u64(message.sent_at);
        self.u8(message.status as u8);
        self.str("message.from", &message.from)?;
        self.str("message.to", &message.to)?;
        self.text("message.text", &message.text)
    }

    pub(crate) fn message_ids(&mut self, field: &'static str, ids: &[MessageId]) -> WriteResult {
        self.list(field, ids, |w, id| {
            w.u64(id.0);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_count_beyond_the_remaining_bytes_is_refused_before_any_item_is_read() {
        // A count of 3 u64 items with 16 bytes left: refused, and no item read.
        let body = [0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut reads = 0;
        let result = Reader::new(&body).list("ids", 8, |r| {
            reads += 1;
            r.u64("ids")
        });
        assert!(matches!(
            result,
            Err(FieldError::CountTooLarge {
                count: 3,
                remaining: 16,
                ..
            })
        ));
        assert_eq!(reads, 0);
        // A count that fits reads every item.
        let fits = [0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut r = Reader::new(&fits);
        assert_eq!(r.list("ids", 8, |r| r.u64("ids")).unwrap(), vec![1, 2]);
        assert!(r.finish().is_ok());
    }

    #[test]
    fn every_field_type_reads_what_the_writer_wrote() {
        let mut buf = BytesMut::new();
        let mut w = Writer::new(&mut buf);
        w.u8(0xab);
        w.u16(0xabcd);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.bool(true);
        w.token(&Token([9; 16]));
        w.str("name", "héllo").unwrap();
        w.text("text", "").unwrap();
        w.opt_u32(None);
        w.opt_u64(Some(5));
        w.opt(Some(&"x"), |w, value| w.str("cursor", value))
            .unwrap();

        let mut r = Reader::new(&buf);
        assert_eq!(r.u8("a").unwrap(), 0xab);
        assert_eq!(r.u16("b").unwrap(), 0xabcd);
        assert_eq!(r.u32("c").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("d").unwrap(), u64::MAX - 1);
        assert!(r.bool("e").unwrap());
        assert_eq!(r.token("f").unwrap(), Token([9; 16]));
        assert_eq!(r.str("g").unwrap(), "héllo");
        assert_eq!(r.text("h").unwrap(), "");
        assert_eq!(r.opt("i", |r| r.u32("i")).unwrap(), None);
        assert_eq!(r.opt("j", |r| r.u64("j")).unwrap(), Some(5));
        assert_eq!(r.opt("k", |r| r.str("k")).unwrap().as_deref(), Some("x"));
        assert!(r.finish().is_ok());
    }
}
