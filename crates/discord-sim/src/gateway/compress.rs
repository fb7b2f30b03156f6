//! `compress=zstd-stream`: one zstd stream per connection, flushed after every
//! message so the client can decode each binary frame as it arrives.

use zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd_safe::{CCtx, InBuffer, OutBuffer};

pub(crate) struct ZstdStream {
    ctx: CCtx<'static>,
}

#[derive(Debug, thiserror::Error)]
#[error("zstd compression failed: {0}")]
pub(crate) struct CompressError(&'static str);

impl ZstdStream {
    pub(crate) fn new() -> Self {
        Self {
            ctx: CCtx::create(),
        }
    }

    pub(crate) fn compress(&mut self, message: &[u8]) -> Result<Vec<u8>, CompressError> {
        // The bound is room enough for the whole flushed message (every
        // call flushes everything, so nothing is carried over): one small
        // allocation per message. Reserving zstd's recommended 128 KiB
        // output size up front instead cost, at the allocator's mmap
        // threshold, a map, page faults and an unmap per dispatch (seen in
        // the simulator's profile under `gatehouse bench gateway`).
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(message.len()) + 64);
        let mut input = InBuffer::around(message);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(CCtx::out_size());
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let remaining = self
                .ctx
                .compress_stream2(&mut output, &mut input, ZSTD_EndDirective::ZSTD_e_flush)
                .map_err(|code| CompressError(zstd_safe::get_error_name(code)))?;
            if remaining == 0 && input.pos == message.len() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zstd_safe::DCtx;

    fn decompress(ctx: &mut DCtx<'_>, frame: &[u8]) -> String {
        let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut input = InBuffer::around(frame);
        while input.pos < frame.len() {
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            ctx.decompress_stream(&mut output, &mut input).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_message_decodes_on_its_own_within_one_stream() {
        let mut encoder = ZstdStream::new();
        let mut decoder = DCtx::create();
        for i in 0..50 {
            let message = format!(
                r#"{{"op":0,"s":{i},"t":"X","d":{{"n":"{}"}}}}"#,
                "y".repeat(i * 40)
            );
            let frame = encoder.compress(message.as_bytes()).unwrap();
            assert_eq!(decompress(&mut decoder, &frame), message);
        }
    }
}
