//! Text format 0.0.4 (the rewrite lives in `nodewarden_shared::exposition`, which the controller's
//! Pushgateway pusher shares) and gzip.

use std::io::Write;

pub use nodewarden_shared::exposition::{TEXT_004_CONTENT_TYPE, openmetrics_to_text004};

/// Gzip-compresses `body` into `out` (cleared first). Fast level: the scrape is on the hot path.
pub fn gzip_into(body: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()?;
    Ok(())
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
        let mut out = Vec::new();
        gzip_into(b"node_load1 1\n", &mut out).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "node_load1 1\n");
    }
}
