//! One response body's streaming compressor.

use std::io::{self, Write};

use bytes::Bytes;

use super::{Coding, Levels};

/// Brotli window: 2^19 = 512 KiB, as ngx_brotli's default. It bounds the
/// encoder's memory per response; a larger window gains little on pages.
const BROTLI_LGWIN: u32 = 19;
/// Brotli's internal input buffer.
const BROTLI_BUFFER: usize = 4096;
/// zstd window: 2^20 = 1 MiB at most (the level's default is capped to it).
const ZSTD_WINDOW_LOG: u32 = 20;
/// Up to this known length the encoders are sized for the body: setting up
/// (zeroing) tables sized for megabytes would cost more than compressing.
const SMALL: u64 = 64 << 10;
/// Up to this known length Brotli uses quality 1 at most: its tables for
/// higher qualities are fixed (0.5-2 MiB) and zeroing them was 3x the
/// compression of a 1 KiB body (`examples/compression_levels.rs --small`).
const BROTLI_FAST_BELOW: u64 = 16 << 10;

enum Inner {
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// Gzip framing comes from the `Compress` (`new_gzip`), which lets the
    /// window be sized to the body; `ZlibEncoder` is only the writer around it.
    Gzip(flate2::write::ZlibEncoder<Vec<u8>>),
    /// After the end (or a failure): nothing more is produced.
    Done,
}

/// Compresses a body chunk by chunk. Each call returns what the coding has
/// produced so far, flushed, so a streamed response reaches the client as
/// the origin sends it; the last call finishes the stream.
pub struct Encoder {
    coding: Coding,
    inner: Inner,
    bytes_in: u64,
    bytes_out: u64,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("coding", &self.coding)
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .finish()
    }
}

impl Encoder {
    /// `coding` must not be `Identity` (the encoder then passes nothing).
    /// `len` is the body's length when the origin said (`Content-Length`):
    /// small bodies get windows and tables of their size, as nginx sizes
    /// zlib's by `Content-Length`.
    pub fn new(coding: Coding, levels: &Levels, len: Option<u64>) -> Encoder {
        // log2 of the smallest window holding the whole body.
        let fit = len
            .filter(|&n| n <= SMALL)
            .map(|n| 64 - n.max(1).saturating_sub(1).leading_zeros());
        let inner = match coding {
            Coding::Brotli => {
                let mut p = brotli::enc::BrotliEncoderParams {
                    quality: levels.brotli.min(11) as i32,
                    lgwin: BROTLI_LGWIN as i32,
                    ..Default::default()
                };
                if let Some(n) = len {
                    p.size_hint = usize::try_from(n).unwrap_or(usize::MAX);
                    if n <= BROTLI_FAST_BELOW {
                        p.quality = p.quality.min(1);
                    }
                }
                if let Some(bits) = fit {
                    p.lgwin = bits.clamp(10, BROTLI_LGWIN) as i32;
                }
                Inner::Brotli(Box::new(brotli::CompressorWriter::with_params(
                    Vec::new(),
                    BROTLI_BUFFER,
                    &p,
                )))
            }
            Coding::Zstd => match zstd_encoder(levels.zstd, fit) {
                Ok(z) => Inner::Zstd(z),
                Err(e) => {
                    log::warn!("zstd encoder: {e}");
                    Inner::Done
                }
            },
            Coding::Gzip => {
                let bits = fit.map_or(15, |b| b.clamp(9, 15)) as u8;
                let c = flate2::Compress::new_gzip(
                    flate2::Compression::new(levels.gzip.clamp(1, 9)),
                    bits,
                );
                Inner::Gzip(flate2::write::ZlibEncoder::new_with_compress(Vec::new(), c))
            }
            Coding::Identity => Inner::Done,
        };
        Encoder {
            coding,
            inner,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// (bytes in, bytes out) so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// Compresses `input`; with `end` the stream is finished and the encoder
    /// (its window) is freed. Errors only if the coding library fails, which
    /// writing into a `Vec` does not.
    pub fn encode(&mut self, input: &[u8], end: bool) -> io::Result<Bytes> {
        self.bytes_in += input.len() as u64;
        let out = match &mut self.inner {
            Inner::Brotli(w) => {
                w.write_all(input)?;
                if !end {
                    w.flush()?;
                }
                std::mem::take(w.get_mut())
            }
            Inner::Zstd(w) => {
                w.write_all(input)?;
                if end {
                    w.do_finish()?;
                } else {
                    w.flush()?;
                }
                std::mem::take(w.get_mut())
            }
            Inner::Gzip(w) => {
                w.write_all(input)?;
                if end {
                    w.try_finish()?;
                } else {
                    w.flush()?;
                }
                std::mem::take(w.get_mut())
            }
            Inner::Done => Vec::new(),
        };
        let mut out = out;
        if end {
            // Brotli writes its final block only when the writer is consumed.
            if let Inner::Brotli(w) = std::mem::replace(&mut self.inner, Inner::Done) {
                out.extend_from_slice(&w.into_inner());
            }
        }
        self.bytes_out += out.len() as u64;
        Ok(Bytes::from(out))
    }
}

fn zstd_encoder(
    level: i32,
    fit: Option<u32>,
) -> io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), level.clamp(1, 19))?;
    match fit {
        Some(bits) => {
            // Tables no larger than the body needs (levels up to 19 use at
            // most 2^17 / 2^16 entries for a 64 KiB input anyway).
            let w = bits.clamp(10, 17);
            z.window_log(w)?;
            z.set_parameter(zstd::stream::raw::CParameter::HashLog((w + 1).min(17)))?;
            z.set_parameter(zstd::stream::raw::CParameter::ChainLog(w.min(16)))?;
        }
        None => z.window_log(ZSTD_WINDOW_LOG)?,
    }
    // The frame carries a checksum, as zstd's own CLI writes by default.
    z.include_checksum(true)?;
    Ok(z)
}
