//! Undo `Content-Encoding` on a captured response-body copy.
//!
//! The proxy forwards bodies untouched and parses a *copy*, which may be cut
//! at a capture cap, so decoding is forgiving: whatever decodes before the
//! input runs out (or turns corrupt) is returned as long as something was
//! produced. Output is capped at `limit` bytes to defuse decompression
//! bombs. Supported: `identity`, `gzip`/`x-gzip` (multi-member), `deflate`
//! (zlib-wrapped or raw, detected), `br`, `zstd`, and comma-separated lists
//! (applied in order by the server, so undone in reverse).

use std::io::{self, Read};

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("corrupt {encoding} body: {reason}")]
    Corrupt { encoding: String, reason: String },
}

/// One supported coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// Parse a `Content-Encoding` value into codings in the order applied.
fn codings(encoding: Option<&str>) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    for token in encoding.unwrap_or("").split(',') {
        let token = token.trim();
        let coding = match token.to_ascii_lowercase().as_str() {
            "" | "identity" => continue,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => return Err(DecodeError::Unsupported(token.to_owned())),
        };
        out.push(coding);
    }
    Ok(out)
}

/// Decode `bytes` per the raw `Content-Encoding` header value.
///
/// Returns the decoded bytes (at most `limit`) and whether the output was
/// cut at `limit`. A truncated or partly corrupt compressed body yields the
/// prefix that could be decoded; it is an error only when nothing decodes.
pub fn decode_body(
    encoding: Option<&str>,
    bytes: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, bool), DecodeError> {
    let mut current: Option<Vec<u8>> = None;
    let mut cut = false;
    for coding in codings(encoding)?.into_iter().rev() {
        let input = current.as_deref().unwrap_or(bytes);
        let (out, layer_cut) = decode_layer(coding, input, limit)?;
        cut |= layer_cut;
        current = Some(out);
    }
    match current {
        Some(out) => Ok((out, cut)),
        None => {
            let n = bytes.len().min(limit);
            Ok((
                bytes.get(..n).unwrap_or_default().to_vec(),
                bytes.len() > limit,
            ))
        }
    }
}

/// Undo one coding, capped at `limit` output bytes.
fn decode_layer(
    coding: Coding,
    input: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, bool), DecodeError> {
    if input.is_empty() {
        return Ok((Vec::new(), false));
    }
    let attempt = match coding {
        Coding::Gzip => read_capped(MultiGzDecoder::new(input), limit),
        Coding::Deflate if looks_like_zlib(input) => {
            let zlib = read_capped(ZlibDecoder::new(input), limit);
            if zlib.0.is_empty() && zlib.2.is_some() {
                read_capped(DeflateDecoder::new(input), limit)
            } else {
                zlib
            }
        }
        Coding::Deflate => read_capped(DeflateDecoder::new(input), limit),
        Coding::Brotli => read_capped(brotli_decompressor::Decompressor::new(input, 4096), limit),
        Coding::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(dec) => read_capped(dec, limit),
            Err(e) => (Vec::new(), false, Some(e)),
        },
    };
    match attempt {
        (out, _, Some(err)) if out.is_empty() => Err(DecodeError::Corrupt {
            encoding: coding.name().to_owned(),
            reason: err.to_string(),
        }),
        (out, cut, _) => Ok((out, cut)),
    }
}

/// A zlib header: CM = 8 (deflate), CINFO <= 7, and the FCHECK checksum.
fn looks_like_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => {
            cmf & 0x0F == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Read until EOF, error, or `limit` bytes. Returns the output, whether it
/// was cut at `limit`, and the error that stopped reading (if any).
fn read_capped<R: Read>(mut reader: R, limit: usize) -> (Vec<u8>, bool, Option<io::Error>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (out, false, None),
            Ok(n) => {
                let got = buf.get(..n).unwrap_or(&buf);
                let room = limit.saturating_sub(out.len());
                if got.len() > room {
                    out.extend_from_slice(got.get(..room).unwrap_or_default());
                    return (out, true, None);
                }
                out.extend_from_slice(got);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (out, false, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    const TEXT: &[u8] =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hello hello hello\"}}]}\n\n";

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).and_then(|()| e.finish()).expect("gzip")
    }
    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).and_then(|()| e.finish()).expect("zlib")
    }
    fn raw_deflate(b: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).and_then(|()| e.finish()).expect("deflate")
    }
    fn zstd(b: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(b, 3).expect("zstd")
    }
    /// A valid brotli stream holding `b` in one uncompressed meta-block
    /// (WBITS=16, MNIBBLES=4), followed by an empty last meta-block.
    fn brotli_stored(b: &[u8]) -> Vec<u8> {
        assert!(!b.is_empty() && b.len() <= 1 << 16);
        let m = b.len() - 1;
        let mut out = vec![
            ((m & 0xF) << 4) as u8,
            (m >> 4) as u8,
            ((m >> 12) & 0xF) as u8 | 0x10,
        ];
        out.extend_from_slice(b);
        out.push(0x03);
        out
    }

    fn ok(enc: Option<&str>, b: &[u8]) -> Vec<u8> {
        let (out, cut) = decode_body(enc, b, 1 << 20).expect("decode");
        assert!(!cut);
        out
    }

    #[test]
    fn identity_and_absent() {
        assert_eq!(ok(None, TEXT), TEXT);
        assert_eq!(ok(Some("identity"), TEXT), TEXT);
        assert_eq!(ok(Some(""), TEXT), TEXT);
    }

    #[test]
    fn each_encoding_round_trips() {
        assert_eq!(ok(Some("gzip"), &gzip(TEXT)), TEXT);
        assert_eq!(ok(Some("X-GZIP"), &gzip(TEXT)), TEXT);
        assert_eq!(ok(Some("deflate"), &zlib(TEXT)), TEXT);
        assert_eq!(ok(Some("deflate"), &raw_deflate(TEXT)), TEXT);
        assert_eq!(ok(Some("zstd"), &zstd(TEXT)), TEXT);
        assert_eq!(ok(Some("br"), &brotli_stored(TEXT)), TEXT);
        // Reference vector from the brotli test suite: "x" with WBITS=22.
        assert_eq!(ok(Some("br"), &[0x0b, 0x00, 0x80, 0x78, 0x03]), b"x");
    }

    #[test]
    fn concatenated_gzip_members() {
        let mut two = gzip(b"ab");
        two.extend(gzip(b"cd"));
        assert_eq!(ok(Some("gzip"), &two), b"abcd");
    }

    #[test]
    fn comma_lists_decode_in_reverse() {
        let body = brotli_stored(&gzip(TEXT));
        assert_eq!(ok(Some("gzip, br"), &body), TEXT);
        assert_eq!(ok(Some("identity,zstd , gzip"), &gzip(&zstd(TEXT))), TEXT);
        assert!(decode_body(Some("br, gzip"), &body, 1 << 20).is_err());
    }

    #[test]
    fn unknown_encoding() {
        assert_eq!(
            decode_body(Some("gzip, compress"), TEXT, 100),
            Err(DecodeError::Unsupported("compress".into()))
        );
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for enc in ["gzip", "deflate", "br", "zstd"] {
            match decode_body(Some(enc), b"\xff\xfe this is not compressed", 100) {
                Err(DecodeError::Corrupt { encoding, .. }) => assert_eq!(encoding, enc),
                other => panic!("{enc}: {other:?}"),
            }
        }
        // An empty body decodes to nothing under any supported coding.
        assert_eq!(decode_body(Some("gzip"), b"", 10), Ok((Vec::new(), false)));
    }

    #[test]
    fn truncated_bodies_return_the_decodable_prefix() {
        let big: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for (enc, full) in [
            ("gzip", gzip(&big)),
            ("deflate", zlib(&big)),
            ("zstd", zstd(&big)),
        ] {
            let half = full.get(..full.len() / 2).unwrap_or_default();
            let (out, cut) = decode_body(Some(enc), half, usize::MAX).expect(enc);
            assert!(!cut && !out.is_empty() && out.len() < big.len(), "{enc}");
            assert!(big.starts_with(&out), "{enc}");
        }
        let br = brotli_stored(TEXT);
        let (out, _) = decode_body(Some("br"), br.get(..20).unwrap_or_default(), 100).expect("br");
        assert!(!out.is_empty() && TEXT.starts_with(&out));
    }

    #[test]
    fn limit_caps_output() {
        let big = vec![b'a'; 1 << 20];
        for (enc, body) in [
            (Some("gzip"), gzip(&big)),
            (Some("zstd"), zstd(&big)),
            (None, big.clone()),
        ] {
            assert_eq!(decode_body(enc, &body, 1000), Ok((vec![b'a'; 1000], true)));
        }
        assert_eq!(
            decode_body(Some("gzip"), &gzip(b"abc"), 3),
            Ok((b"abc".to_vec(), false))
        );
        assert_eq!(
            decode_body(Some("gzip"), &gzip(b"abc"), 0),
            Ok((Vec::new(), true))
        );
    }
}
