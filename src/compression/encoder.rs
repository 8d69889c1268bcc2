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

enum Inner {
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
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
    pub fn new(coding: Coding, levels: &Levels) -> Encoder {
        let inner = match coding {
            Coding::Brotli => Inner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                levels.brotli.min(11),
                BROTLI_LGWIN,
            ))),
            Coding::Zstd => match zstd_encoder(levels.zstd) {
                Ok(z) => Inner::Zstd(z),
                Err(e) => {
                    log::warn!("zstd encoder: {e}");
                    Inner::Done
                }
            },
            Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip.clamp(1, 9)),
            )),
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

fn zstd_encoder(level: i32) -> io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), level.clamp(1, 19))?;
    z.window_log(ZSTD_WINDOW_LOG)?;
    // The frame carries a checksum, as zstd's own CLI writes by default.
    z.include_checksum(true)?;
    Ok(z)
}
