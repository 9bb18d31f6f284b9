//! Text format 0.0.4 (the rewrite lives in `nodewarden_shared::exposition`, which the controller's
//! Pushgateway pusher shares) and gzip.

pub use nodewarden_shared::exposition::TEXT_004_CONTENT_TYPE;

/// Gzip for scrape bodies: libdeflate, whole-buffer (the body is in memory anyway), with one
/// compressor kept for the agent's lifetime. At its fastest level it takes about a third of the
/// CPU of a streaming deflate at its fastest, for a body of the same size (docs/perf.md).
pub struct Gzip {
    compressor: libdeflater::Compressor,
    /// The output, kept at its largest bound so that it is not zeroed again every scrape.
    out: Vec<u8>,
}

impl Default for Gzip {
    fn default() -> Self {
        Gzip {
            // Level 1, the fastest that compresses (libdeflate's level 0 only stores).
            compressor: libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(1).unwrap_or_default(),
            ),
            out: Vec::new(),
        }
    }
}

impl Gzip {
    /// Gzip-compresses `body`; the result is valid until the next call.
    pub fn compress(&mut self, body: &[u8]) -> Result<&[u8], GzipError> {
        let bound = self.compressor.gzip_compress_bound(body.len());
        if self.out.len() < bound {
            self.out.resize(bound, 0);
        }
        let written = self
            .compressor
            .gzip_compress(body, &mut self.out)
            .map_err(|_| GzipError)?;
        self.out.get(..written).ok_or(GzipError)
    }
}

/// Only possible if the output bound were wrong; reported rather than trusted.
#[derive(Debug, thiserror::Error)]
#[error("the compressed body did not fit its computed bound")]
pub struct GzipError;

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
}
