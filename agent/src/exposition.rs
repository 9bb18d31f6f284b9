//! Text format 0.0.4 (the rewrite lives in `nodewarden_shared::exposition`, which the controller's
//! Pushgateway pusher shares) and gzip.

use isal_sys::igzip_lib as isal;

pub use nodewarden_shared::exposition::TEXT_004_CONTENT_TYPE;

/// Gzip for scrape bodies: ISA-L's one-shot ("stateless") deflate at level 1, the body being in
/// memory anyway. Against libdeflate's fastest level (the previous choice) it costs ≈ 40 % less
/// CPU for a body 3 % larger, and its 16 KiB hash table suffers less from the cold caches a
/// scrape every 15 s meets than libdeflate's 128 KiB one (docs/perf.md).
pub struct Gzip {
    stream: Stream,
    /// The output, kept at its largest bound so that it is not zeroed again every scrape.
    out: Vec<u8>,
}

/// ISA-L's stream state (82 KiB, allocated once). Its raw pointers point into buffers borrowed
/// for one call only and are set afresh before each, so it may move between threads with the
/// `Gzip` that owns it.
struct Stream(Box<isal::isal_zstream>);

// SAFETY: see `Stream`: no pointer in it is dereferenced outside `Gzip::compress`, which sets
// them all from its own arguments first.
unsafe impl Send for Stream {}

impl Default for Gzip {
    fn default() -> Self {
        // SAFETY: isal_zstream is plain C data (integers, pointers, arrays of them) for which
        // all-zero is a valid value; isal_deflate_stateless_init sets it up before every use.
        let stream = unsafe { Box::<isal::isal_zstream>::new_zeroed().assume_init() };
        Gzip {
            stream: Stream(stream),
            out: Vec::new(),
        }
    }
}

/// Room for the compressed form of `len` bytes. ISA-L falls back to stored blocks when deflate
/// does not shrink the input, so output never exceeds the input plus block headers (5 bytes
/// per 64 KiB), its largest block header and the gzip header and trailer (18 bytes); this
/// bound leaves more than that.
fn compressed_bound(len: usize) -> usize {
    len + len / 16 + isal::ISAL_DEF_MAX_HDR_SIZE as usize + 1024
}

impl Gzip {
    /// Gzip-compresses `body`; the result is valid until the next call.
    pub fn compress(&mut self, body: &[u8]) -> Result<&[u8], GzipError> {
        let bound = compressed_bound(body.len());
        if self.out.len() < bound {
            self.out.resize(bound, 0);
        }
        let avail_in = u32::try_from(body.len()).map_err(|_| GzipError::TooLarge)?;
        let avail_out = u32::try_from(self.out.len()).map_err(|_| GzipError::TooLarge)?;
        let stream = &mut *self.stream.0;
        // SAFETY: `stream` is a valid, exclusively borrowed isal_zstream, initialised by the
        // first call; the input and output pointers are valid for `avail_in` and `avail_out`
        // bytes for the duration of the call (ISA-L only reads the input, though its field is
        // declared mutable).
        let rc = unsafe {
            isal::isal_deflate_stateless_init(stream);
            stream.level = 1;
            stream.gzip_flag = isal::IGZIP_GZIP as u16;
            stream.next_in = body.as_ptr().cast_mut();
            stream.avail_in = avail_in;
            stream.next_out = self.out.as_mut_ptr();
            stream.avail_out = avail_out;
            stream.end_of_stream = 1;
            stream.flush = isal::NO_FLUSH as u16;
            isal::isal_deflate_stateless(stream)
        };
        if rc != isal::COMP_OK as i32 {
            return Err(GzipError::Isal(rc));
        }
        let written = stream.total_out as usize;
        self.out.get(..written).ok_or(GzipError::Isal(rc))
    }
}

/// Only possible if the output bound were wrong or a body exceeded 4 GiB; reported rather
/// than trusted.
#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    #[error("ISA-L deflate failed with code {0}")]
    Isal(i32),
    #[error("the body is too large to compress in one call")]
    TooLarge,
}

/// Whether an `Accept-Encoding` header value accepts gzip (and does not refuse it with q=0).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|part| {
        let mut params = part.split(';');
        let coding = params.next().unwrap_or("").trim();
        let refused = params.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                == Some(0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=1.0, *;q=0.5"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip(""));
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let mut gzip = Gzip::default();
        let body = "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1\n".repeat(200);
        gzip.compress(body.as_bytes()).unwrap();
        // The compressor and its (now larger) output buffer are reused: a second, shorter body
        // must not carry anything of the first.
        let out = gzip.compress(b"node_load5 2\n").unwrap().to_vec();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "node_load5 2\n");
        // And it compresses: repetitive text shrinks to a small fraction.
        let out = gzip.compress(body.as_bytes()).unwrap();
        assert!(
            out.len() * 10 < body.len(),
            "{} of {} bytes",
            out.len(),
            body.len()
        );
    }

    #[test]
    fn incompressible_and_large_bodies_fit_their_bound() {
        use std::io::Read;
        let mut gzip = Gzip::default();
        // xorshift noise: deflate cannot shrink it, so ISA-L stores it.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let big = "node_network_receive_bytes_total{device=\"eth0\"} 123456789\n".repeat(40_000);
        for body in [&noise[..], big.as_bytes(), b""] {
            let out = gzip.compress(body).unwrap().to_vec();
            assert!(out.len() <= compressed_bound(body.len()));
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == body, "round trip of {} bytes", body.len());
        }
    }
}
