//! Text format 0.0.4 (the rewrite lives in `nodewarden_shared::exposition`, which the controller's
//! Pushgateway pusher shares) and gzip.

pub use nodewarden_shared::exposition::TEXT_004_CONTENT_TYPE;

/// Gzip for scrape bodies: libdeflate, whole-buffer (the body is in memory anyway), with one
/// compressor kept for the agent's lifetime. At its fastest level it takes about a third of the
/// CPU of a streaming deflate at its fastest, for a body of the same size (docs/perf.md).
pub struct Gzip {
    compressor: libdeflater::Compressor,
}

impl Default for Gzip {
    fn default() -> Self {
        Gzip {
            // Level 1, the fastest that compresses (libdeflate's level 0 only stores).
            compressor: libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(1).unwrap_or_default(),
            ),
        }
    }
}

impl Gzip {
    /// Gzip-compresses `body` into `out` (replacing its content, reusing its allocation).
    pub fn compress_into(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), GzipError> {
        out.clear();
        out.resize(self.compressor.gzip_compress_bound(body.len()), 0);
        let written = self
            .compressor
            .gzip_compress(body, out)
            .map_err(|_| GzipError)?;
        out.truncate(written);
        Ok(())
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
        let mut out = Vec::new();
        let mut gzip = Gzip::default();
        gzip.compress_into(b"node_load1 1\n", &mut out).unwrap();
        // The compressor is reused: a second body must not carry anything of the first.
        gzip.compress_into(b"node_load5 2\n", &mut out).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "node_load5 2\n");
        // And it compresses: repetitive text shrinks to a small fraction.
        let body = "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1\n".repeat(200);
        gzip.compress_into(body.as_bytes(), &mut out).unwrap();
        assert!(
            out.len() * 10 < body.len(),
            "{} of {} bytes",
            out.len(),
            body.len()
        );
    }
}
