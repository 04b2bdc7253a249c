//! RecordIO, the framing of the Mesos v1 streaming APIs (scheduler, executor
//! and operator SUBSCRIBE): `record = size LF data`, the size in base-10 ASCII
//! bytes, no separator after the data.

use bytes::{Buf, Bytes, BytesMut};

/// Frames one record.
pub fn encode(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 12);
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(data);
    out.freeze()
}

/// A framing error in a RecordIO stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordIoError {
    /// The size prefix holds something other than digits.
    #[error("record size is not a decimal number: {0:?}")]
    BadSize(String),
    /// The size prefix is larger than the decoder allows.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The decoder's limit.
        limit: usize,
    },
}

/// Incremental decoder: feed it chunks as they arrive, take whole records out.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: usize,
    pending: Option<usize>,
}

impl Decoder {
    /// A decoder refusing records larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            limit,
            pending: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Takes the next complete record, if one has arrived.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        let size = match self.pending {
            Some(size) => size,
            None => {
                let Some(newline) = self.buf.iter().position(|b| *b == b'\n') else {
                    if self.buf.len() > 20 {
                        return Err(RecordIoError::BadSize(
                            String::from_utf8_lossy(&self.buf[..20]).into_owned(),
                        ));
                    }
                    return Ok(None);
                };
                let digits = &self.buf[..newline];
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(RecordIoError::BadSize(
                        String::from_utf8_lossy(digits).into_owned(),
                    ));
                }
                let size: u64 = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        RecordIoError::BadSize(String::from_utf8_lossy(digits).into_owned())
                    })?;
                if size > self.limit as u64 {
                    return Err(RecordIoError::TooLarge {
                        size,
                        limit: self.limit,
                    });
                }
                self.buf.advance(newline + 1);
                let size = size as usize;
                self.pending = Some(size);
                size
            }
        };
        if self.buf.len() < size {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(self.buf.split_to(size).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_split_anywhere() {
        let records: Vec<&[u8]> = vec![b"{\"type\":\"HEARTBEAT\"}", b"x", b"{\"a\":\"\xc3\xa9\"}"];
        let mut stream = Vec::new();
        for r in &records {
            stream.extend_from_slice(&encode(r));
        }
        assert!(stream.starts_with(b"20\n{\"type\":\"HEARTBEAT\"}1\nx"));
        for split in 0..stream.len() {
            let mut d = Decoder::new(1024);
            let mut out = Vec::new();
            d.push(&stream[..split]);
            while let Some(r) = d.next_record().unwrap() {
                out.push(r);
            }
            d.push(&stream[split..]);
            while let Some(r) = d.next_record().unwrap() {
                out.push(r);
            }
            let out: Vec<&[u8]> = out.iter().map(|b| b.as_ref()).collect();
            assert_eq!(out, records, "split at {split}");
        }
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        let mut d = Decoder::new(10);
        d.push(b"1x\nabc");
        assert!(matches!(d.next_record(), Err(RecordIoError::BadSize(_))));
        let mut d = Decoder::new(10);
        d.push(b"11\n");
        assert_eq!(
            d.next_record(),
            Err(RecordIoError::TooLarge {
                size: 11,
                limit: 10
            })
        );
        let mut d = Decoder::new(10);
        d.push(&[b'9'; 30]);
        assert!(matches!(d.next_record(), Err(RecordIoError::BadSize(_))));
    }
}
