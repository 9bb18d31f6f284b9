//! Length-delimited frames: a big-endian `u32` payload length, then the payload.
//!
//! [`FrameDecoder`] accepts bytes in chunks of any size (as a QUIC stream delivers them) and
//! yields whole payloads. A declared length above the limit is an error as soon as the four
//! length bytes are in, before anything is buffered. Decoding is linear in the bytes pushed: a
//! read offset moves over the buffer, whose consumed front is dropped only once it is at least
//! as long as what is left to move, so the bytes ever moved never exceed the bytes received.

/// The largest payload either side accepts. A state report of a node with dozens of devices and
/// services is a few kilobytes.
pub const MAX_FRAME: usize = 256 * 1024;

const HEADER: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// Prefixes a payload with its length.
pub fn encode_frame(payload: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    if payload.len() > max || payload.len() > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received bytes; those before `start` are consumed.
    buf: Vec<u8>,
    start: usize,
    max: usize,
    failed: Option<FrameError>,
    /// Bytes moved by compaction (the linearity test reads it).
    #[cfg(test)]
    moved: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
            failed: None,
            #[cfg(test)]
            moved: 0,
        }
    }

    /// Bytes received and not yet returned as a frame.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Appends received bytes. Call [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let pending = self.buf.len() - self.start;
        if self.start > 0 && self.start >= pending {
            // The consumed front dropped here is at least as long as what moves, so the bytes
            // ever moved never exceed the bytes received (amortised linear), and the buffer
            // stays within twice what is pending plus the chunk.
            self.buf.drain(..self.start);
            self.start = 0;
            #[cfg(test)]
            {
                self.moved += pending;
            }
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole frame's payload, `Ok(None)` if more bytes are needed. After an error the
    /// stream cannot be resynchronised; every later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(header) = self.pending().first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        let error = if len > self.max {
            Some(FrameError::TooLarge { len, max: self.max })
        } else if len == 0 {
            Some(FrameError::Empty)
        } else {
            None
        };
        if let Some(e) = error {
            self.buf = Vec::new();
            self.start = 0;
            self.failed = Some(e.clone());
            return Err(e);
        }
        let Some(payload) = self.pending().get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        let frame = payload.to_vec();
        self.start += HEADER + len;
        if self.start == self.buf.len() {
            // Everything consumed: start over without moving a byte.
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Called at the end of the stream: an error if a frame was cut off.
    pub fn finish(&self) -> Result<(), FrameError> {
        match (&self.failed, self.pending().len()) {
            (Some(e), _) => Err(e.clone()),
            (None, 0) => Ok(()),
            (None, buffered) => Err(FrameError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|p| encode_frame(p, MAX_FRAME).unwrap())
            .collect()
    }

    fn drain(d: &mut FrameDecoder) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn any_chunking_yields_the_same_frames() {
        let payloads: [&[u8]; 4] = [b"a", b"hello", &[0u8; 1000], b"xyz"];
        let stream = frames(&payloads);
        for chunk in [1, 2, 3, 4, 5, 7, 64, 1003, stream.len()] {
            let mut d = FrameDecoder::new(MAX_FRAME);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                d.push(c);
                got.extend(drain(&mut d).unwrap());
            }
            assert_eq!(got, payloads.map(<[u8]>::to_vec), "chunk size {chunk}");
            assert_eq!(d.finish(), Ok(()));
        }
    }

    #[test]
    fn oversized_length_fails_before_the_payload_arrives() {
        let mut d = FrameDecoder::new(16);
        d.push(&17u32.to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        // Sticky: more bytes do not revive it.
        d.push(&[0; 17]);
        assert!(d.next_frame().is_err());
        assert!(d.finish().is_err());
        let mut d = FrameDecoder::new(MAX_FRAME);
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_frame_of_exactly_the_limit_passes() {
        let mut d = FrameDecoder::new(16);
        d.push(&encode_frame(&[1; 16], 16).unwrap());
        assert_eq!(d.next_frame(), Ok(Some(vec![1; 16])));
        assert_eq!(
            encode_frame(&[1; 17], 16),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
    }

    #[test]
    fn truncated_and_empty_input() {
        let stream = frames(&[b"hello"]);
        for cut in 1..stream.len() {
            let mut d = FrameDecoder::new(MAX_FRAME);
            d.push(&stream[..cut]);
            assert_eq!(d.next_frame(), Ok(None));
            assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: cut }));
        }
        let mut d = FrameDecoder::new(MAX_FRAME);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        assert_eq!(encode_frame(b"", MAX_FRAME), Err(FrameError::Empty));
    }

    #[test]
    fn garbage_never_panics_and_never_buffers_past_the_limit() {
        // A deterministic pseudo-random byte soup in varying chunk sizes.
        let mut x: u32 = 0x9e37_79b9;
        for round in 0..200 {
            let mut d = FrameDecoder::new(1024);
            for _ in 0..50 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let chunk: Vec<u8> = (0..(x % 97) as usize)
                    .map(|i| (x >> (i % 24)) as u8)
                    .collect();
                d.push(&chunk);
                match drain(&mut d) {
                    Ok(fs) => assert!(fs.iter().all(|f| !f.is_empty() && f.len() <= 1024)),
                    Err(_) => break,
                }
                assert!(d.pending().len() <= 1024 + HEADER + 97, "round {round}");
                assert!(
                    d.buf.len() <= 2 * (1024 + HEADER + 97) + 97,
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn ten_thousand_frames_in_one_buffer_decode_in_linear_time() {
        let payloads: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| i.to_be_bytes()[..1 + (i % 4) as usize].to_vec())
            .collect();
        let stream: Vec<u8> = payloads
            .iter()
            .flat_map(|p| encode_frame(p, MAX_FRAME).unwrap())
            .collect();
        let mut d = FrameDecoder::new(MAX_FRAME);
        d.push(&stream);
        let got = drain(&mut d).unwrap();
        assert_eq!(got, payloads);
        assert_eq!(d.finish(), Ok(()));
        // One buffer, read in place: nothing was moved, and everything was released.
        assert_eq!(d.moved, 0);
        assert!(d.buf.is_empty());
        // Pushed again with a partial frame left behind each time, compaction moves each byte
        // at most once: the total moved stays under the bytes pushed.
        let mut d = FrameDecoder::new(MAX_FRAME);
        let mut got = Vec::new();
        for c in stream.chunks(4097) {
            d.push(c);
            got.extend(drain(&mut d).unwrap());
        }
        assert_eq!(got, payloads);
        assert!(
            d.moved <= stream.len(),
            "moved {} of {}",
            d.moved,
            stream.len()
        );
    }

    #[test]
    fn one_byte_at_a_time() {
        let payloads: Vec<Vec<u8>> = (0..500u32)
            .map(|i| vec![i as u8; 1 + (i as usize * 7) % 300])
            .collect();
        let stream: Vec<u8> = payloads
            .iter()
            .flat_map(|p| encode_frame(p, MAX_FRAME).unwrap())
            .collect();
        let mut d = FrameDecoder::new(MAX_FRAME);
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            got.extend(drain(&mut d).unwrap());
            // Never more than one frame (plus its header) held.
            assert!(d.buf.len() <= 2 * (HEADER + 300));
        }
        assert_eq!(got, payloads);
        assert_eq!(d.finish(), Ok(()));
        assert!(d.moved <= stream.len());
    }
}
